//! Bridge IP leases: `172.16.0.2`–`172.16.0.254`, one per live VM.

use rigbox_types::WorkspaceId;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// First and last leasable host numbers on the `/24`.
const FIRST: u8 = 2;
const LAST: u8 = 254;

/// The lease table of one node.
#[derive(Debug, Default)]
pub struct Leases {
    by_ws: HashMap<WorkspaceId, Ipv4Addr>,
}

impl Leases {
    /// The address of host `n` on the bridge.
    pub fn addr(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(172, 16, 0, n)
    }

    /// The MAC of a lease, derived from its address so it never collides.
    pub fn mac(ip: Ipv4Addr) -> String {
        let o = ip.octets();
        format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3])
    }

    /// The workspace's lease, taking the lowest free address if it has none.
    pub fn take(&mut self, ws: &WorkspaceId) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_ws.get(ws) {
            return Some(*ip);
        }
        let used: std::collections::HashSet<Ipv4Addr> = self.by_ws.values().copied().collect();
        let ip = (FIRST..=LAST)
            .map(Self::addr)
            .find(|ip| !used.contains(ip))?;
        self.by_ws.insert(ws.clone(), ip);
        Some(ip)
    }

    /// Records a lease a running VM already holds (re-adoption).
    pub fn adopt(&mut self, ws: &WorkspaceId, ip: Ipv4Addr) {
        self.by_ws.insert(ws.clone(), ip);
    }

    pub fn release(&mut self, ws: &WorkspaceId) {
        self.by_ws.remove(ws);
    }

    pub fn held(&self, ws: &WorkspaceId) -> Option<Ipv4Addr> {
        self.by_ws.get(ws).copied()
    }

    /// The workspace holding `ip`, if any (the bridge's caller identity).
    pub fn owner(&self, ip: Ipv4Addr) -> Option<&WorkspaceId> {
        self.by_ws.iter().find(|(_, v)| **v == ip).map(|(k, _)| k)
    }

    pub fn count(&self) -> usize {
        self.by_ws.len()
    }

    /// How many leases exist in all.
    pub const CAPACITY: usize = (LAST - FIRST + 1) as usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_and_release() {
        let mut l = Leases::default();
        let a = WorkspaceId::generate();
        let b = WorkspaceId::generate();
        assert_eq!(l.take(&a), Some(Leases::addr(2)));
        assert_eq!(l.take(&a), Some(Leases::addr(2)));
        assert_eq!(l.take(&b), Some(Leases::addr(3)));
        l.release(&a);
        let c = WorkspaceId::generate();
        assert_eq!(l.take(&c), Some(Leases::addr(2)));
        assert_eq!(Leases::mac(Leases::addr(2)), "52:54:00:10:00:02");
    }

    #[test]
    fn exhaustion() {
        let mut l = Leases::default();
        for _ in 0..Leases::CAPACITY {
            assert!(l.take(&WorkspaceId::generate()).is_some());
        }
        assert!(l.take(&WorkspaceId::generate()).is_none());
    }
}
