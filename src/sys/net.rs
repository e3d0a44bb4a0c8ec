//! Socket options and the machine's interface addresses.

use super::*;

/// Sets TCP_NOTSENT_LOWAT: a write waits while `bytes` or more already
/// queued on the socket are not yet sent. Unlike a fixed SO_SNDBUF it
/// does not limit the data in flight, so it never caps a long path.
pub fn set_notsent_lowat(fd: BorrowedFd<'_>, bytes: u32) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: valid fd; the option value is a c_int of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// The TCP_NOTSENT_LOWAT of a socket (0: none set).
#[cfg(test)]
pub fn notsent_lowat(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd; out-pointers to a c_int and its length.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw mut v).cast(),
            &raw mut len,
        )
    })?;
    Ok(u32::try_from(v).unwrap_or(0))
}

/// SO_LINGER with a zero timeout: the final close sends a TCP reset.
pub fn reset_on_close(s: &impl AsRawFd) {
    // SAFETY: `s` owns the descriptor and outlives this borrow, which
    // ends with this call.
    let fd = unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) };
    let _ = rustix::net::sockopt::set_socket_linger(fd, Some(Duration::ZERO));
}

/// The machine's non-loopback interface addresses that are up (IPv6
/// link-local ones left out: they need a zone to be dialed).
pub fn interface_addrs() -> Vec<std::net::IpAddr> {
    use std::net::IpAddr;
    let up = libc::IFF_UP as libc::c_uint;
    let loopback = libc::IFF_LOOPBACK as libc::c_uint;
    let mut out = Vec::new();
    for (flags, ip) in if_addrs() {
        if flags & up == 0 || flags & loopback != 0 {
            continue;
        }
        let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if !ip.is_loopback() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The interface flags and IP address of every entry getifaddrs lists
/// with an IPv4 or IPv6 address, copied out of the C list.
fn if_addrs() -> Vec<(libc::c_uint, std::net::IpAddr)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that stays valid until the
    // freeifaddrs at the end of this block (called once, only on success).
    // Each node is read through its own non-null pointer; a non-null
    // ifa_addr starts with a sockaddr whose family says which larger struct
    // it is (sockaddr_in, sockaddr_in6). Only copies leave the block.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while let Some(ifa) = cur.as_ref() {
            cur = ifa.ifa_next;
            let addr = ifa.ifa_addr;
            if addr.is_null() {
                continue;
            }
            let ip = match libc::c_int::from((*addr).sa_family) {
                libc::AF_INET => {
                    let a = &*addr.cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let a = &*addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            out.push((ifa.ifa_flags, ip));
        }
        libc::freeifaddrs(head);
    }
    out
}

/// A pipe that moves socket bytes through the kernel with splice(2),
/// never through user space.
pub struct SplicePipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl SplicePipe {
    /// A pipe of (about) `size` bytes.
    pub fn new(size: usize) -> io::Result<SplicePipe> {
        use rustix::pipe::{PipeFlags, fcntl_setpipe_size, pipe_with};
        let (r, w) = pipe_with(PipeFlags::CLOEXEC)?;
        // A smaller pipe (the default 64 KiB) only costs more calls.
        let _ = fcntl_setpipe_size(&w, size);
        Ok(SplicePipe { r, w })
    }

    /// Moves up to `max` bytes from `from` to `to`: how many (0 when
    /// `from` ended). Without SPLICE_F_MORE, which would hold back the
    /// small records of a handshake.
    /// What was read goes on only if `claim` allows it (else the error is
    /// `PermissionDenied` and it stays behind); `written` hears every part
    /// that reached `to`.
    pub fn splice(
        &mut self,
        from: &impl AsFd,
        to: &impl AsFd,
        max: usize,
        claim: &dyn Fn(usize) -> bool,
        written: &dyn Fn(usize),
    ) -> io::Result<usize> {
        use rustix::pipe::{SpliceFlags, splice};
        let n = splice(from, None, &self.w, None, max, SpliceFlags::MOVE)?;
        if n > 0 && !claim(n) {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        let mut left = n;
        while left > 0 {
            match splice(&self.r, None, to, None, left, SpliceFlags::MOVE)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                m => {
                    left -= m;
                    written(m);
                }
            }
        }
        Ok(n)
    }
}

/// TCP keepalive on `s`: probes after `idle` of silence, every `interval`,
/// `count` of them unanswered ending the connection (a dead peer or a NAT
/// that forgot us shows as an error instead of a silence forever).
pub fn keepalive(s: &impl AsFd, idle: Duration, interval: Duration, count: u32) -> io::Result<()> {
    use rustix::net::sockopt::{
        set_socket_keepalive, set_tcp_keepcnt, set_tcp_keepidle, set_tcp_keepintvl,
    };
    set_socket_keepalive(s, true)?;
    set_tcp_keepidle(s, idle)?;
    set_tcp_keepintvl(s, interval)?;
    set_tcp_keepcnt(s, count)?;
    Ok(())
}
