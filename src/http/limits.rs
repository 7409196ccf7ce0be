//! How many `seconds=` deltas run at once: at most one per client address,
//! and a bounded number in all. A delta holds a request open for N seconds
//! and takes two snapshots; without a bound, a client could pile them up.

use std::net::IpAddr;
use std::sync::Mutex;

use super::response::Response;

/// `seconds=` deltas in progress at once in the built-in server (and one
/// per client address).
pub(super) const MAX_DELTAS: usize = 4;

/// The deltas in progress.
pub(super) struct Deltas {
    max: usize,
    running: Mutex<Running>,
}

struct Running {
    count: usize,
    /// Few (at most `max`): a list is enough, and const-constructible.
    clients: Vec<IpAddr>,
}

/// A delta's place; given back on drop.
pub(super) struct Permit<'a> {
    deltas: &'a Deltas,
    client: Option<IpAddr>,
}

impl Deltas {
    /// At most `max` deltas at once (and one per client).
    pub(super) const fn new(max: usize) -> Deltas {
        Deltas {
            max,
            running: Mutex::new(Running {
                count: 0,
                clients: Vec::new(),
            }),
        }
    }

    /// A place for one more delta from `client`, or the 429/503 that says
    /// why not.
    pub(super) fn acquire(&self, client: Option<IpAddr>) -> Result<Permit<'_>, Response> {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = client {
            if r.clients.contains(&ip) {
                return Err(Response::go_error(
                    429,
                    "a profile with seconds= is already running for this client; wait for it to finish",
                ));
            }
        }
        if r.count >= self.max {
            return Err(Response::go_error(
                503,
                &format!(
                    "too many profiles with seconds= in progress (at most {}); try again later",
                    self.max
                ),
            ));
        }
        r.count += 1;
        if let Some(ip) = client {
            r.clients.push(ip);
        }
        Ok(Permit {
            deltas: self,
            client,
        })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut r = self
            .deltas
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        r.count -= 1;
        if let Some(ip) = self.client {
            r.clients.retain(|c| *c != ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_client_and_a_bound_in_all() {
        let d = Deltas::new(2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let c: IpAddr = [127, 0, 0, 3].into();
        let pa = d.acquire(Some(a)).unwrap();
        assert_eq!(d.acquire(Some(a)).err().unwrap().status(), 429);
        let _pb = d.acquire(Some(b)).unwrap();
        assert_eq!(d.acquire(Some(c)).err().unwrap().status(), 503);
        drop(pa);
        assert!(d.acquire(Some(a)).is_ok());
        assert!(d.acquire(None).is_ok());
    }
}
