//! Configuration generations: every apply compiles the lab anew, and this keeps the
//! numbers that outlive a snapshot stable by name.
//!
//! Port numbers index the workers' TUN queues and the per-port counters; flow zones key
//! the connection-tracking, NAT and EIGW state. Compilation numbers them in file order, so
//! an apply that adds an instance in the middle would shift them: tracked flows would be
//! lost (R-SG-CHANGE keeps them) and packets would leave through the wrong device. Here a
//! name keeps its number for the life of the router, a new name gets a new one, and a
//! removed port leaves a hole (`Attachment::Detached`); numbers are never reused.

use std::collections::HashMap;

use dataplane::snapshot::{Attachment, Port, PortId};
use dataplane::{Snapshot, Topology};

use crate::compile::{self, CompileError};
use crate::model::Lab;

/// Name → number, never reused.
#[derive(Debug, Default)]
struct Numbers {
    by_name: HashMap<String, u32>,
    next: u32,
}

impl Numbers {
    fn get(&mut self, name: &str) -> u32 {
        if let Some(n) = self.by_name.get(name) {
            return *n;
        }
        let n = self.next;
        self.next += 1;
        self.by_name.insert(name.to_string(), n);
        n
    }
}

/// The numbering of a running router, and its generation counter.
#[derive(Debug, Default)]
pub struct Generations {
    ports: Numbers,
    enis: Numbers,
    nats: Numbers,
    vpcs: Numbers,
    generation: u64,
}

impl Generations {
    pub fn new() -> Self {
        Generations::default()
    }

    /// The generation of the last snapshot made.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Compiles `lab` as the next generation, numbered consistently with every earlier one,
    /// and counts it as published.
    pub fn next(&mut self, lab: &Lab) -> Result<Snapshot, CompileError> {
        let snap = self.candidate(lab)?;
        self.commit();
        Ok(snap)
    }

    /// Compiles `lab` as the next generation without counting it yet: an apply that is
    /// refused after compiling (it would change the lab's namespaces) leaves the
    /// generation as it was. New names keep the numbers they got.
    pub fn candidate(&mut self, lab: &Lab) -> Result<Snapshot, CompileError> {
        let mut topo = compile::topology(lab)?;
        self.renumber(&mut topo);
        Ok(Snapshot::new(topo, self.generation + 1))
    }

    /// Counts the candidate as published.
    pub fn commit(&mut self) {
        self.generation += 1;
    }

    fn renumber(&mut self, t: &mut Topology) {
        for v in &mut t.vpcs {
            v.zone = self.vpcs.get(&v.id);
        }
        for e in &mut t.enis {
            e.zone = self.enis.get(&e.id);
        }
        for n in &mut t.nat_gateways {
            n.zone = self.nats.get(&n.id);
        }
        // Ports: each at its stable number, holes for numbers no longer used.
        let ids: Vec<u32> = t.ports.iter().map(|p| self.ports.get(&p.name)).collect();
        let len = self.ports.next as usize;
        let mut ports: Vec<Port> = (0..len)
            .map(|_| Port {
                name: "".into(),
                attachment: Attachment::Detached,
            })
            .collect();
        for (port, id) in t.ports.drain(..).zip(&ids) {
            ports[*id as usize] = port;
        }
        t.ports = ports;
        let remap = |p: PortId| PortId(ids[p.ix()]);
        for e in &mut t.enis {
            e.port = e.port.map(remap);
        }
        for h in &mut t.hosts {
            h.port = remap(h.port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(text: &str) -> Lab {
        crate::check_text(text).expect("valid lab")
    }

    #[test]
    fn names_keep_their_numbers_and_removed_ports_leave_holes() {
        let base = crate::DEFAULT_LAB;
        let mut g = Generations::new();
        let first = g.next(&lab(base)).unwrap();
        let name = |s: &Snapshot, i: usize| s.topo.ports[i].name.to_string();
        assert_eq!(name(&first, 0), "web-1");
        let web_zone = first.topo.enis[0].zone;
        // A new instance written before web-1, and app-1 removed.
        let changed = base
            .replace(
                "      - { id: web-1,",
                "      - { id: new-1, subnet: public-a, private_ip: 10.0.1.20 }\n      - { id: web-1,",
            )
            .replace(
                "      - { id: app-1, subnet: private-a, private_ip: 10.0.2.10, ipv6_address: \"2001:db8:10:2::10\" }\n",
                "",
            );
        let second = g.next(&lab(&changed)).unwrap();
        assert_eq!(second.generation, 2);
        assert_eq!(name(&second, 0), "web-1", "web-1 keeps port 0");
        assert_eq!(
            second.topo.ports[1].attachment,
            Attachment::Detached,
            "app-1's hole"
        );
        assert_eq!(name(&second, 2), "inet-1");
        assert_eq!(name(&second, 3), "new-1", "a new name gets a new number");
        let web = second.topo.enis.iter().find(|e| &*e.id == "web-1").unwrap();
        assert_eq!(web.zone, web_zone, "web-1's flows keep their zone");
        assert_eq!(web.port, Some(PortId(0)));
    }
}
