//! IP addresses and networks for `WSGITrustedProxies` (what httpd's `apr_ipsubnet_create`
//! accepts: an address, `addr/prefix`, or an IPv4 `addr/netmask`). Pure; parsed in the httpd
//! parent, matched in the httpd child.
#![forbid(unsafe_code)]

use std::net::IpAddr;

/// An IP network: an address and the number of leading bits that must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

fn bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u32::from(v) as u128, 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

impl IpNet {
    /// Parses `10.0.0.1`, `10.0.0.0/8`, `10.0.0.0/255.0.0.0`, `::1` or `fd00::/8`.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or network"))?;
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            // As apr_ipsubnet_create: an IPv4 peer is always matched as IPv4, so a network
            // written in the mapped form could never match anything.
            return Err(format!(
                "'{s}' is an IPv4-mapped IPv6 address; write the IPv4 form, e.g. {v4}"
            ));
        }
        let (_, width) = bits(addr);
        let prefix = match p {
            None => width,
            Some(p) => match (p.parse::<u8>(), p.parse::<std::net::Ipv4Addr>(), addr) {
                (Ok(n), _, _) if n <= width => n,
                (_, Ok(mask), IpAddr::V4(_)) => {
                    let m = u32::from(mask);
                    if m.leading_ones() + m.trailing_zeros() != 32 {
                        return Err(format!("'{s}' has a non-contiguous netmask"));
                    }
                    m.leading_ones() as u8
                }
                _ => return Err(format!("'{s}' has an invalid prefix length")),
            },
        };
        Ok(IpNet { addr, prefix })
    }

    /// The address as written (host bits are kept; `contains` ignores them).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// How many leading bits of an address must match.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let ((net, w1), (cand, w2)) = (bits(self.addr), bits(ip));
        if w1 != w2 {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        let shift = w1 - self.prefix;
        (net >> shift) == (cand >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::IpNet;

    #[test]
    fn parse_and_match() {
        let n = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let m = IpNet::parse("192.168.0.0/255.255.0.0").unwrap();
        assert!(m.contains("192.168.9.9".parse().unwrap()));
        let h = IpNet::parse("127.0.0.1").unwrap();
        assert!(h.contains("127.0.0.1".parse().unwrap()));
        assert!(!h.contains("127.0.0.2".parse().unwrap()));
        assert!(
            IpNet::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(IpNet::parse("1.2.3.4/33").is_err());
        assert!(IpNet::parse("1.2.3.4/255.0.255.0").is_err());
        assert!(IpNet::parse("example.com").is_err());
    }

    /// Fuzzing finding (config_net): `::ffff:127.0.0.1` was accepted but matched no peer, not
    /// even 127.0.0.1 (peers are compared as IPv4). It is refused, as httpd's
    /// apr_ipsubnet_create refuses it, with the IPv4 form to write instead.
    #[test]
    fn ipv4_mapped_networks_are_refused() {
        let e = IpNet::parse("::ffff:127.0.0.1").unwrap_err();
        assert!(e.contains("write the IPv4 form, e.g. 127.0.0.1"), "{e}");
        assert!(IpNet::parse("::ffff:10.0.0.0/104").is_err());
        // Other IPv6 networks still match IPv6 peers only.
        let all6 = IpNet::parse("::/0").unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()));
        assert!(!all6.contains("::ffff:10.0.0.1".parse().unwrap()));
    }
}
