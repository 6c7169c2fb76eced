//! Sockets: the `AF_INET` socket whose ioctls configure interfaces, and a generic netlink socket
//! (what is sent over it, and what its messages mean, is `crate::power`'s and
//! `fledge_init::acpi`'s business).

use core::ffi::c_int;

use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::{check, r, Errno};

// From <linux/sockios.h>; the libc crate has them for Android only.
const SIOCADDRT: libc::c_ulong = 0x890B;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891C;

/// An `AF_INET` datagram socket for the interface ioctls.
pub struct NetSocket(OwnedFd);

/// `addr` as the `sockaddr` of an `AF_INET` address (`sockaddr_in`: family, port 0, address,
/// zero padding).
fn sockaddr_in(addr: [u8; 4]) -> libc::sockaddr {
    let mut data = [0 as libc::c_char; 14];
    for (d, s) in data[2..6].iter_mut().zip(addr) {
        *d = s as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: data,
    }
}

/// Values of a C type for which all zero bytes are a valid value.
trait Zeroed: Sized {
    fn zeroed() -> Self {
        // SAFETY: implemented only for the plain C structs below, whose fields are integers,
        // arrays of integers, and unions of such.
        unsafe { core::mem::zeroed() }
    }
}

impl Zeroed for libc::ifreq {}
impl Zeroed for libc::rtentry {}

impl NetSocket {
    pub fn open() -> Result<NetSocket, Errno> {
        let fd = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        );
        r(fd).map(NetSocket)
    }

    fn ifreq(name: &str) -> Result<libc::ifreq, Errno> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(Errno(libc::EINVAL));
        }
        let mut req = libc::ifreq::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        Ok(req)
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> Result<(), Errno> {
        // SAFETY: every request used here takes a pointer to the struct type passed with it.
        check(unsafe { libc::ioctl(self.0.as_raw_fd(), request as _, arg as *mut T) }).map(drop)
    }

    /// The interface's flags (`IFF_*`).
    pub fn flags(&self, name: &str) -> Result<c_int, Errno> {
        let mut req = Self::ifreq(name)?;
        self.ioctl(SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS filled in the flags member.
        Ok(c_int::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff)
    }

    /// Sets `IFF_UP` on the interface.
    pub fn up(&self, name: &str) -> Result<(), Errno> {
        let flags = self.flags(name)?;
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_flags = (flags | libc::IFF_UP) as libc::c_short;
        self.ioctl(SIOCSIFFLAGS, &mut req)
    }

    /// Sets the interface's IPv4 address and netmask.
    pub fn set_address(&self, name: &str, addr: [u8; 4], mask: [u8; 4]) -> Result<(), Errno> {
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        self.ioctl(SIOCSIFADDR, &mut req)?;
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_netmask = sockaddr_in(mask);
        self.ioctl(SIOCSIFNETMASK, &mut req)
    }

    /// Adds the default route through `gateway`.
    pub fn default_route(&self, gateway: [u8; 4]) -> Result<(), Errno> {
        let mut rt = libc::rtentry::zeroed();
        rt.rt_dst = sockaddr_in([0; 4]);
        rt.rt_genmask = sockaddr_in([0; 4]);
        rt.rt_gateway = sockaddr_in(gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        self.ioctl(SIOCADDRT, &mut rt)
    }

    /// Whether a network interface of that name exists.
    pub fn interface_exists(&self, name: &str) -> bool {
        rustix::net::netdevice::name_to_index(self.0.as_fd(), name).is_ok()
    }
}

/// Whether a network interface of that name exists.
pub fn interface_exists(name: &str) -> bool {
    NetSocket::open().is_ok_and(|s| s.interface_exists(name))
}

/// A generic netlink socket (`NETLINK_GENERIC`).
pub struct Netlink(OwnedFd);

impl Netlink {
    pub fn open() -> Result<Netlink, Errno> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(rustix::net::netlink::GENERIC),
        );
        r(fd).map(Netlink)
    }

    /// Sends one message to the kernel.
    pub fn send(&self, message: &[u8]) -> Result<(), Errno> {
        r(rustix::net::send(&self.0, message, SendFlags::empty())).map(drop)
    }

    /// Receives one message without waiting: `Err(EAGAIN)` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        r(rustix::net::recv(&self.0, buf, RecvFlags::DONTWAIT)).map(|(n, _)| n)
    }

    /// Joins the multicast group `group`.
    pub fn join(&self, group: u32) -> Result<(), Errno> {
        // SAFETY: the option value is a u32 of the size passed.
        check(unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                (&group as *const u32).cast(),
                core::mem::size_of::<u32>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Makes an arriving message raise `SIGIO` at this process, and reads never block.
    pub fn signal_on_arrival(&self) -> Result<(), Errno> {
        signal_on_input(self.0.as_fd())
    }
}

/// Makes input arriving on `fd` (a socket, an evdev device) raise `SIGIO` at this process, and
/// reads of it never block.
pub fn signal_on_input(fd: rustix::fd::BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: fcntl on a descriptor the caller borrows, with integer arguments.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETOWN, super::getpid()) })?;
    r(rustix::fs::fcntl_setfl(
        fd,
        rustix::fs::OFlags::ASYNC | rustix::fs::OFlags::NONBLOCK,
    ))
}
