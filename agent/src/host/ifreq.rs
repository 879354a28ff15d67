//! `ifreq` ioctls on a throwaway socket of this network namespace (sysfs
//! may belong to another namespace, e.g. under `nsenter --net`): the
//! interface MAC, its driver, and its link-layer multicast filter.
//!
//! The multicast filter has no route-netlink message: `ip maddr` itself
//! uses SIOCADDMULTI / SIOCDELMULTI, which add or drop a *global*
//! reference (idempotent: adding a MAC already added is a no-op, so a
//! host left dirty by a crashed agent is fine).

use std::io;

/// Runs `request` on an `ifreq` naming `interface`, filled by `fill`.
fn ifreq_ioctl(
    interface: &str,
    request: libc::c_ulong,
    fill: impl FnOnce(&mut libc::ifreq),
) -> io::Result<libc::ifreq> {
    if interface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: a zeroed ifreq is valid; the name fits (checked above); the
    // socket is closed on every path.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(interface.bytes()) {
            *d = s as libc::c_char;
        }
        fill(&mut ifr);
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, request as _, &mut ifr);
        let e = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(e);
        }
        Ok(ifr)
    }
}

/// The interface's MAC address.
pub fn mac(interface: &str) -> io::Result<[u8; 6]> {
    let ifr = ifreq_ioctl(interface, libc::SIOCGIFHWADDR, |_| {})?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// The interface's driver name (ethtool), e.g. `veth`, `ixgbe`.
pub fn driver(interface: &str) -> Option<String> {
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32],
    // bus_info[32], erom_version[32], reserved2[12], 5 x u32.
    let mut info = [0u8; 4 + 32 * 5 + 12 + 20];
    info[..4].copy_from_slice(&0x0000_0003u32.to_ne_bytes()); // ETHTOOL_GDRVINFO
    let data = info.as_mut_ptr() as *mut libc::c_char;
    ifreq_ioctl(interface, 0x8946, |ifr| ifr.ifr_ifru.ifru_data = data).ok()?; // SIOCETHTOOL
    let name = &info[4..36];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

fn multicast(interface: &str, request: libc::c_ulong, mac: [u8; 6]) -> io::Result<()> {
    ifreq_ioctl(interface, request, |ifr| {
        // SAFETY: writing the hwaddr member of the union.
        let sa = unsafe { &mut ifr.ifr_ifru.ifru_hwaddr };
        sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        for (d, s) in sa.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
    })
    .map(drop)
}

/// Adds `mac` to the interface's multicast filter (`ip maddr add`).
pub fn add_multicast(interface: &str, mac: [u8; 6]) -> io::Result<()> {
    multicast(interface, libc::SIOCADDMULTI, mac)
}

/// Removes `mac` from the interface's multicast filter (`ip maddr del`).
pub fn del_multicast(interface: &str, mac: [u8; 6]) -> io::Result<()> {
    multicast(interface, libc::SIOCDELMULTI, mac)
}
