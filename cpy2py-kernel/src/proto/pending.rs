//! Requests in flight: a slab of slots with generations, so that a late reply
//! can never complete a newer request that reused the slot. Generic over `W`,
//! the handle of a thread waiting for its reply (the shell's `Arc<Waiter>`).

use crate::error::CallError;
use cpy2py_wire::{Outcome, PeerId, RequestId};
use slab::Slab;

/// A function that receives a request's result on the thread that read it.
pub type Callback = Box<dyn FnOnce(Result<Outcome, CallError>) + Send + 'static>;

/// How the requester wants to learn of the result.
pub enum Completion<W> {
    /// A thread blocked in [`crate::PendingCall::wait`]: store the result and wake it.
    Thread(W),
    /// Call this function with the result.
    Callback(Callback),
}

enum State<W> {
    Waiting(Completion<W>),
    Done(Result<Outcome, CallError>),
}

struct Slot<W> {
    generation: u32,
    dst: PeerId,
    state: State<W>,
}

/// What completing a request asks the caller to do (outside the table's lock).
pub enum Completed<W> {
    /// The result was stored; wake this thread.
    Wake(W),
    /// Run this callback with this result.
    Deliver(Callback, Result<Outcome, CallError>),
    /// The id is unknown or stale (abandoned or already completed): drop it.
    Stale,
}

/// The table of requests in flight from this peer.
pub struct PendingTable<W> {
    slots: Slab<Slot<W>>,
    generations: Vec<u32>,
}

impl<W> Default for PendingTable<W> {
    fn default() -> Self {
        PendingTable {
            slots: Slab::new(),
            generations: Vec::new(),
        }
    }
}

impl<W: Clone> PendingTable<W> {
    /// Registers a request to `dst` and returns its id.
    pub fn insert(&mut self, dst: PeerId, completion: Completion<W>) -> RequestId {
        let index = self.slots.vacant_key();
        if self.generations.len() <= index {
            self.generations.resize(index + 1, 0);
        }
        let generation = self.generations[index].wrapping_add(1);
        self.generations[index] = generation;
        let key = self.slots.insert(Slot {
            generation,
            dst,
            state: State::Waiting(completion),
        });
        debug_assert_eq!(key, index);
        RequestId {
            index: index as u32,
            generation,
        }
    }

    fn slot_mut(&mut self, id: RequestId) -> Option<&mut Slot<W>> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
    }

    /// Records the result of request `id`.
    pub fn complete(&mut self, id: RequestId, result: Result<Outcome, CallError>) -> Completed<W> {
        let Some(slot) = self.slot_mut(id) else {
            return Completed::Stale;
        };
        match &slot.state {
            State::Done(_) => Completed::Stale,
            State::Waiting(Completion::Thread(waiter)) => {
                let waiter = waiter.clone();
                slot.state = State::Done(result);
                Completed::Wake(waiter)
            }
            State::Waiting(Completion::Callback(_)) => {
                let slot = self.slots.remove(id.index as usize);
                match slot.state {
                    State::Waiting(Completion::Callback(callback)) => {
                        Completed::Deliver(callback, result)
                    }
                    // Checked by the enclosing match arm.
                    _ => Completed::Stale,
                }
            }
        }
    }

    /// Takes the result of request `id` if it has arrived, freeing the slot.
    pub fn take(&mut self, id: RequestId) -> Option<Result<Outcome, CallError>> {
        let slot = self.slot_mut(id)?;
        if !matches!(slot.state, State::Done(_)) {
            return None;
        }
        match self.slots.remove(id.index as usize).state {
            State::Done(result) => Some(result),
            State::Waiting(_) => None,
        }
    }

    /// Whether the result of request `id` has arrived.
    pub fn has_result(&self, id: RequestId) -> bool {
        self.slots
            .get(id.index as usize)
            .is_some_and(|s| s.generation == id.generation && matches!(s.state, State::Done(_)))
    }

    /// Forgets request `id`; a reply arriving later is discarded as stale.
    pub fn abandon(&mut self, id: RequestId) {
        if self.slot_mut(id).is_some() {
            self.slots.remove(id.index as usize);
        }
    }

    /// Completes every request waiting on `dst` with the error `make()`.
    pub fn fail_peer(&mut self, dst: PeerId, make: impl Fn() -> CallError) -> Vec<Completed<W>> {
        self.fail_where(|slot_dst| slot_dst == dst, make)
    }

    /// Completes every waiting request with the error `make()`.
    pub fn fail_all(&mut self, make: impl Fn() -> CallError) -> Vec<Completed<W>> {
        self.fail_where(|_| true, make)
    }

    fn fail_where(
        &mut self,
        to: impl Fn(PeerId) -> bool,
        make: impl Fn() -> CallError,
    ) -> Vec<Completed<W>> {
        let ids: Vec<RequestId> = self
            .slots
            .iter()
            .filter(|(_, slot)| to(slot.dst) && matches!(slot.state, State::Waiting(_)))
            .map(|(index, slot)| RequestId {
                index: index as u32,
                generation: slot.generation,
            })
            .collect();
        ids.into_iter()
            .map(|id| self.complete(id, Err(make())))
            .collect()
    }

    /// Number of requests in flight or with an untaken result.
    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpy2py_wire::Value;
    use std::sync::{Arc, Mutex};

    /// A thread, as the table sees it: any handle.
    fn waiter() -> u32 {
        7
    }

    fn ok(n: i64) -> Result<Outcome, CallError> {
        Ok(Outcome::Ok(Value::Int(n)))
    }

    #[test]
    fn reply_is_stored_and_taken_once() {
        let mut table = PendingTable::<u32>::default();
        let id = table.insert(PeerId(1), Completion::Thread(waiter()));
        assert!(table.take(id).is_none(), "no result before the reply");
        assert!(matches!(table.complete(id, ok(5)), Completed::Wake(_)));
        assert_eq!(
            table.take(id).map(|r| r.ok()),
            Some(Some(Outcome::Ok(Value::Int(5))))
        );
        assert!(table.take(id).is_none());
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn late_reply_cannot_land_on_a_reused_slot() {
        let mut table = PendingTable::<u32>::default();
        let old = table.insert(PeerId(1), Completion::Thread(waiter()));
        table.abandon(old);
        let new = table.insert(PeerId(1), Completion::Thread(waiter()));
        assert_eq!(old.index, new.index, "the slot is reused");
        assert_ne!(old.generation, new.generation);
        assert!(matches!(table.complete(old, ok(1)), Completed::Stale));
        assert!(
            table.take(new).is_none(),
            "the stale reply did not complete the new request"
        );
        assert!(matches!(table.complete(new, ok(2)), Completed::Wake(_)));
        assert_eq!(
            table.take(new).map(|r| r.ok()),
            Some(Some(Outcome::Ok(Value::Int(2))))
        );
    }

    #[test]
    fn a_second_reply_is_stale() {
        let mut table = PendingTable::<u32>::default();
        let id = table.insert(PeerId(1), Completion::Thread(waiter()));
        assert!(matches!(table.complete(id, ok(1)), Completed::Wake(_)));
        assert!(matches!(table.complete(id, ok(2)), Completed::Stale));
        assert_eq!(
            table.take(id).map(|r| r.ok()),
            Some(Some(Outcome::Ok(Value::Int(1))))
        );
    }

    #[test]
    fn callbacks_receive_the_result_and_free_the_slot() {
        let mut table = PendingTable::<u32>::default();
        let seen = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&seen);
        let id = table.insert(
            PeerId(2),
            Completion::Callback(Box::new(move |r| {
                *sink.lock().expect("no poison") = Some(r.ok());
            })),
        );
        match table.complete(id, ok(9)) {
            Completed::Deliver(callback, result) => callback(result),
            _ => panic!("expected a callback"),
        }
        assert_eq!(
            *seen.lock().expect("no poison"),
            Some(Some(Outcome::Ok(Value::Int(9))))
        );
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn peer_loss_fails_only_that_peers_requests() {
        let mut table = PendingTable::<u32>::default();
        let a = table.insert(PeerId(1), Completion::Thread(waiter()));
        let b = table.insert(PeerId(2), Completion::Thread(waiter()));
        let c = table.insert(PeerId(1), Completion::Thread(waiter()));
        let lost = || CallError::PeerLost {
            peer: PeerId(1),
            twin_id: "t".into(),
            reason: "gone".into(),
        };
        assert_eq!(table.fail_peer(PeerId(1), lost).len(), 2);
        assert!(matches!(
            table.take(a),
            Some(Err(CallError::PeerLost { .. }))
        ));
        assert!(matches!(
            table.take(c),
            Some(Err(CallError::PeerLost { .. }))
        ));
        assert!(table.take(b).is_none(), "peer 2's request is still waiting");
    }
}
