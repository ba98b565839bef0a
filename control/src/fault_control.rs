//! The running router's faults: `vpcd fault` requests over the control socket, each
//! change republished as a snapshot (the lab as last applied, compiled anew, with the
//! active faults laid over it), the stopped instances' links taken down and brought back.

use std::time::{Instant, SystemTime};

use crate::control_socket::{Reply, Status};
use crate::faults::{check_start, list, overlay, stopped_instances, Fault, Start};
use crate::router::{lock, Router};

impl Router {
    /// `fault list`, `fault start ACTION TARGET SCOPE|- DURATION|-`, `fault stop ID|--all`.
    /// `json`: `fault list` in its JSON form.
    pub(crate) fn fault(&self, args: &str, json: bool) -> Reply {
        let words: Vec<&str> = args.split_whitespace().collect();
        fn opt<'a>(w: Option<&&'a str>) -> Option<&'a str> {
            w.copied().filter(|w| *w != "-")
        }
        match words.as_slice() {
            ["list"] if json => (
                Status::Ok,
                crate::json::to_string(&crate::json::faults(&lock(&self.faults).0)),
            ),
            ["list"] => (Status::Ok, list(&lock(&self.faults).0)),
            ["start", action, target, rest @ ..] => {
                let (scope, duration) = (opt(rest.first()), opt(rest.get(1)));
                let start = match check_start(&self.cell.load(), action, target, scope, duration) {
                    Ok(s) => s,
                    Err(e) => return (Status::Bad, e),
                };
                match self.start_fault(start) {
                    Ok(f) => {
                        log::info!("fault started: {}", f.describe());
                        (Status::Ok, format!("{}\n", f.describe()))
                    }
                    Err(e) => (Status::Refused, e),
                }
            }
            ["stop", which] => match self.stop_faults(Some(which)) {
                Ok(stopped) => (Status::Ok, stopped),
                Err(e) => (Status::Bad, e),
            },
            _ => (
                Status::Bad,
                "fault needs: list | start ACTION TARGET [SCOPE DURATION] | stop FAULT-ID|--all"
                    .into(),
            ),
        }
    }

    fn start_fault(&self, start: Start) -> Result<Fault, String> {
        let mut gens = lock(&self.gens);
        let fault = {
            let mut faults = lock(&self.faults);
            let f = Fault {
                id: faults.1,
                action: start.action,
                target: start.target,
                scope: start.scope,
                started: SystemTime::now(),
                until: start.duration.map(|d| Instant::now() + d),
            };
            faults.1 += 1;
            faults.0.push(f.clone());
            f
        };
        if let Err(e) = self.republish(&mut gens) {
            lock(&self.faults).0.retain(|f| f.id != fault.id);
            return Err(e);
        }
        Ok(fault)
    }

    /// Whether a fault's duration is over (checked twice a second by the main loop).
    pub fn faults_expired(&self) -> bool {
        let now = Instant::now();
        lock(&self.faults)
            .0
            .iter()
            .any(|f| f.until.is_some_and(|u| u <= now))
    }

    /// Ends the faults named (`f-3`, `--all`), or, with `None`, those whose duration is
    /// over. Returns what was stopped; `Err` for a name no active fault has.
    pub fn stop_faults(&self, which: Option<&str>) -> Result<String, String> {
        let mut gens = lock(&self.gens);
        let ended: Vec<Fault> = {
            let mut faults = lock(&self.faults);
            let now = Instant::now();
            let ends = |f: &Fault| match which {
                Some("--all") => true,
                Some(name) => f.name() == name,
                None => f.until.is_some_and(|u| u <= now),
            };
            if let Some(name) = which.filter(|w| *w != "--all") {
                if !faults.0.iter().any(|f| f.name() == name) {
                    let active: Vec<String> = faults.0.iter().map(Fault::name).collect();
                    return Err(format!(
                        "no active fault `{}`; {}",
                        crate::yaml::shown(name),
                        if active.is_empty() {
                            "none is active".to_string()
                        } else {
                            format!("active: {}", active.join(", "))
                        }
                    ));
                }
            }
            let (gone, kept) = faults.0.drain(..).partition(|f| ends(f));
            faults.0 = kept;
            gone
        };
        if ended.is_empty() {
            return Ok("no fault to stop\n".into());
        }
        self.republish(&mut gens)?;
        for f in &ended {
            let why = if which.is_none() {
                "its duration is over"
            } else {
                "stopped"
            };
            log::info!(
                "fault ended ({why}): {} {} {}",
                f.name(),
                f.action.name(),
                f.target
            );
        }
        Ok(ended
            .iter()
            .map(|f| format!("stopped {}\n", f.describe()))
            .collect())
    }

    /// Compiles the lab as last applied with the active faults over it, publishes it, and
    /// brings the stopped instances' eth0 down (and the others' back up).
    /// Compiles the lab as last applied anew, with the VPN state of the moment and the
    /// active faults over it, and publishes it.
    pub(crate) fn republish(
        &self,
        gens: &mut crate::generations::Generations,
    ) -> Result<(), String> {
        let mut model = lock(&self.model).clone();
        model.vpn_state = self.vpn_state();
        let mut snap = gens.candidate(&model).map_err(|e| e.to_string())?;
        overlay(&mut snap, &lock(&self.faults).0);
        let down = stopped_instances(&snap);
        self.publish(gens, snap);
        self.vpn_published(&self.cell.load());
        self.sync_links(&down);
        Ok(())
    }

    /// Takes the eth0 of the namespaces in `down` down and brings the others back.
    pub(crate) fn sync_links(&self, down: &[String]) {
        let mut current = lock(&self.links_down);
        let guard = lock(&self.lab);
        let Some(lab) = guard.as_ref() else { return };
        for id in down.iter().filter(|d| !current.contains(d)) {
            if let Err(e) = lab.set_link(id, false) {
                log::error!("fault: {id}: {e}");
            }
        }
        for id in current.iter().filter(|c| !down.contains(c)) {
            if let Err(e) = lab.set_link(id, true) {
                log::error!("fault: {id}: {e}");
            }
        }
        *current = down.to_vec();
    }
}
