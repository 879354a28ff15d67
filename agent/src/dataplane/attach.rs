//! Attaching the filter to the interface, and keeping it attached.
//!
//! The link is pinned (it must outlive the agent, S3) and also held by a
//! descriptor of the agent's own ([`OwnedLink`]), so removing the pin file
//! or unmounting bpffs no longer detaches the program under a running
//! agent. [`Dataplane::verify_attachment`] is the liveness check the
//! runtime calls every few heartbeats: it pins the link again if the pin
//! went away, and attaches the program again if the link was detached (or
//! the interface re-created); if neither works the node must stop serving,
//! and the caller is told why.

use std::path::PathBuf;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::XdpMode;
use xnlb_common::PROG_FILTER;

use super::link::{ifindex, OwnedLink};
use super::{Dataplane, DataplaneError};

/// Where and how the filter is attached.
#[derive(Debug)]
pub(super) struct Attachment {
    interface: String,
    mode: XdpMode,
    prog_id: u32,
    link: OwnedLink,
}

/// What [`Dataplane::verify_attachment`] found (and mended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentCheck {
    /// The program is attached and pinned as it should be.
    Intact,
    /// Nothing to check (not attached: a witness).
    NotAttached,
    /// Something was wrong and has been repaired: what, for a warning.
    Repaired(String),
}

fn link_err(e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Link(e.to_string())
}

impl Dataplane {
    fn link_pin(&self, interface: &str) -> PathBuf {
        self.pin_dir().join(format!("link_{interface}"))
    }

    /// The pin directory, mounted and created again if bpffs was unmounted.
    fn ensure_pin_dir(&self) -> std::io::Result<()> {
        super::bpffs::ensure_mounted(self.pin_dir()).map_err(std::io::Error::other)?;
        std::fs::create_dir_all(self.pin_dir())
    }

    fn filter_prog_id(&mut self) -> Result<u32, DataplaneError> {
        let prog = self.program(PROG_FILTER)?;
        let info = prog.info().map_err(|source| DataplaneError::Program {
            name: PROG_FILTER,
            source,
        })?;
        Ok(info.id())
    }

    /// Attaches the filter to `interface` in `mode`, pinning the link so the
    /// program keeps filtering (and fences itself when its lease runs out)
    /// if the agent dies. If a previous agent left a pinned link, its
    /// program is replaced atomically instead: no packet is ever unfiltered.
    /// Either way the agent keeps a descriptor of the link (see the module
    /// doc). Returns how it was attached, for the log.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: XdpMode,
    ) -> Result<&'static str, DataplaneError> {
        let pin = self.link_pin(interface);
        let prog_err = |source| DataplaneError::Program {
            name: PROG_FILTER,
            source,
        };
        let prog_id = self.filter_prog_id()?;
        if let Ok(pinned) = PinnedLink::from_pin(&pin) {
            let fd = FdLink::from(pinned);
            let id = fd.info().map_err(link_err)?.id();
            let link = aya::programs::xdp::XdpLink::try_from(fd).map_err(link_err)?;
            self.program(PROG_FILTER)?
                .attach_to_link(link)
                .map_err(prog_err)?;
            self.attachment = Some(Attachment {
                interface: interface.to_string(),
                mode,
                prog_id,
                link: OwnedLink::open(id).map_err(link_err)?,
            });
            return Ok("adopted the pinned link (program replaced atomically)");
        }
        let link = self.attach_new_link(interface, mode, &pin)?;
        self.attachment = Some(Attachment {
            interface: interface.to_string(),
            mode,
            prog_id,
            link,
        });
        Ok(match mode {
            XdpMode::Skb => "generic (skb) mode",
            XdpMode::Driver => "native (driver) mode",
            XdpMode::Hardware => "offloaded mode",
            XdpMode::Default => "kernel-chosen mode",
        })
    }

    /// Creates a new link of the filter on `interface`, keeps a descriptor
    /// of it and pins it at `pin`.
    fn attach_new_link(
        &mut self,
        interface: &str,
        mode: XdpMode,
        pin: &std::path::Path,
    ) -> Result<OwnedLink, DataplaneError> {
        let prog_err = |source| DataplaneError::Program {
            name: PROG_FILTER,
            source,
        };
        let prog = self.program(PROG_FILTER)?;
        let id = prog.attach(interface, mode).map_err(prog_err)?;
        let link = prog.take_link(id).map_err(prog_err)?;
        let fd = FdLink::try_from(link).map_err(link_err)?;
        // Our own descriptor first: if pinning fails, the link stays.
        let owned = OwnedLink::open(fd.info().map_err(link_err)?.id()).map_err(link_err)?;
        fd.pin(pin).map_err(link_err)?;
        Ok(owned)
    }

    /// Checks that the filter is still attached to its interface through
    /// our link and that the link is still pinned; mends what it can.
    ///
    /// Cheap enough for every few heartbeats: one `if_nametoindex`, one
    /// `BPF_OBJ_GET_INFO_BY_FD` and one `stat` when all is well. An error
    /// means the program is not filtering the interface and could not be
    /// put back: the node must stop serving.
    pub fn verify_attachment(&mut self) -> Result<AttachmentCheck, DataplaneError> {
        let Some(att) = &self.attachment else {
            return Ok(AttachmentCheck::NotAttached);
        };
        let interface = att.interface.clone();
        let mode = att.mode;
        let pin = self.link_pin(&interface);
        let want_ifindex = ifindex(&interface);
        if want_ifindex == 0 {
            return Err(DataplaneError::Link(format!(
                "interface {interface} is gone: the XDP program no longer filters VIP traffic"
            )));
        }
        let state = att.link.state().map_err(|e| {
            DataplaneError::Link(format!("querying XDP link {}: {e}", att.link.id()))
        })?;
        let problem = if state.ifindex == 0 {
            Some(format!(
                "the XDP link {} was detached from {interface}",
                att.link.id()
            ))
        } else if state.ifindex != want_ifindex {
            Some(format!(
                "{interface} was re-created (index {} -> {want_ifindex})",
                state.ifindex
            ))
        } else if state.prog_id != att.prog_id {
            Some(format!(
                "the XDP link {} runs program {} instead of ours ({})",
                att.link.id(),
                state.prog_id,
                att.prog_id
            ))
        } else {
            None
        };
        match problem {
            None if std::fs::symlink_metadata(&pin).is_ok() => Ok(AttachmentCheck::Intact),
            None => {
                // The pin is what keeps the program (and its fencing lease)
                // on the interface if this agent dies: put it back.
                let pinned = self.ensure_pin_dir().and_then(|()| {
                    self.attachment
                        .as_ref()
                        .map(|a| a.link.pin(&pin))
                        .unwrap_or(Ok(()))
                });
                pinned.map_err(|e| {
                    DataplaneError::Link(format!(
                        "the pinned link {} was removed and pinning it again failed: {e}",
                        pin.display()
                    ))
                })?;
                Ok(AttachmentCheck::Repaired(format!(
                    "the pinned link {} was removed (rm or bpffs unmount); pinned it again",
                    pin.display()
                )))
            }
            Some(why) => {
                // A stale pin would be adopted by the next agent: replace it.
                let _ = std::fs::remove_file(&pin);
                let _ = self.ensure_pin_dir();
                let link = self.attach_new_link(&interface, mode, &pin).map_err(|e| {
                    DataplaneError::Link(format!("{why}, and attaching it again failed: {e}"))
                })?;
                let id = link.id();
                if let Some(att) = &mut self.attachment {
                    att.link = link;
                }
                Ok(AttachmentCheck::Repaired(format!(
                    "{why}; attached the program again (link {id})"
                )))
            }
        }
    }

    /// Detaches the filter from `interface` (graceful leave): the pin goes
    /// now, our descriptor when the data plane is dropped.
    pub fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let pin = self.link_pin(interface);
        match PinnedLink::from_pin(&pin) {
            Ok(p) => {
                p.unpin().map_err(link_err)?;
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }
}
