//! One synchronous netlink exchange, shared by the socket table
//! (sock_diag) and host setup (route): send a request, collect the
//! answer. Synchronous on purpose: host setup runs before and after the
//! runtime, and the socket table is read from the protocol thread between
//! events. A socket per request keeps calls independent.

use std::fmt::Debug;
use std::io;

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};

/// How long an exchange waits for the kernel's next answer: callers run on
/// the protocol thread, which must never hang on a reply that does not
/// come (a request whose answer has no terminator waits this long, then
/// fails as `WouldBlock`).
const RECEIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn set_receive_timeout(socket: &Socket, t: std::time::Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid socket descriptor, and a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `msg` on a new socket of netlink `protocol` with `flags` (besides
/// NLM_F_REQUEST) and returns what came back: every message of a dump, the
/// answer to a get, nothing for an acknowledged change. A kernel error
/// comes back as its errno, an unparsable answer as `InvalidData`.
pub fn exchange<M>(protocol: isize, msg: M, flags: u16) -> io::Result<Vec<M>>
where
    M: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let mut socket = Socket::new(protocol)?;
    set_receive_timeout(&socket, RECEIVE_TIMEOUT)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<M>>::deserialize(&rx[offset..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                NetlinkPayload::Error(e) => return Err(e.to_io()),
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}
