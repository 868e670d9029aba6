//! What the agent asks of the host it runs on: its hostname (the default
//! node name) and a network interface's IPv4 address (`-iface`).

use std::net::Ipv4Addr;

pub(super) fn hostname() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The first IPv4 address of a network interface.
pub(super) fn interface_ipv4(name: &str) -> Result<Ipv4Addr, String> {
    let mut found = None;
    let mut exists = false;
    // SAFETY: getifaddrs fills a linked list we only read and then free.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return Err(format!(
                "Failed to get interface addresses: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            let ifname = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if ifname == name {
                exists = true;
                if !ifa.ifa_addr.is_null()
                    && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET
                    && found.is_none()
                {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    match (exists, found) {
        (_, Some(ip)) => Ok(ip),
        (true, None) => Err(format!("Interface '{name}' has no IPv4 addresses")),
        (false, None) => Err(format!("Invalid network interface: '{name}' not found")),
    }
}
