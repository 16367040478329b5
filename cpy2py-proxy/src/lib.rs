//! Identity tables of cpy2py: objects exported by their native peer, references
//! received from other peers, class identity, and the batched messages that keep
//! the distributed reference counts right.
//!
//! This crate is bookkeeping only. It does no IO, has no clock and no threads,
//! and knows nothing of Python: it is generic over the handles its host stores
//! (the Python bindings store `Py<PyAny>` for native objects and a weak reference
//! for proxies; the tests store plain Rust values). The host owns the sockets,
//! the locks and the conversion of values; it calls these tables at the points
//! described below and sends the messages they hand back.
//!
//! | table | side | maps |
//! | --- | --- | --- |
//! | [`ExportTable`] | owner | [`ObjectId`] ⇄ native object, with per-peer reference counts |
//! | [`ImportTable`] | receiver | `(owner, ObjectId)` → live proxy (weak) and references received |
//! | [`ClassTable`] | both | `(module, qualname)` → host class |
//! | [`BatchedReleases`] | receiver | owner → [`ReleaseBatch`] of dropped references |
//! | [`RetainBatch`] | forwarder | owner → [`Retain`]s to send before a frame |
//!
//! # The reference-counting scheme
//!
//! Peers form a star: the master (peer 0) forwards frames between twins,
//! first in, first out per socket, and every peer reads each socket in order.
//! Every frame between two twins therefore travels twin → master → twin, and
//! two frames sent by one peer to one destination arrive in the order they were
//! sent. From the wire, the scheme needs nothing more.
//!
//! 1. **Counted at send time.** When an owner sends a reference to one of its
//!    objects to peer `P` it calls [`ExportTable::export`], which adds one
//!    reference held by `P` *before* the frame is written. References in flight
//!    are thus always counted.
//! 2. **Released exactly as received.** The receiver counts the references it
//!    receives per object ([`ImportTable::receive`]), however many proxies that
//!    takes. When the proxy dies, [`ImportTable::proxy_dropped`] hands back
//!    exactly that number and forgets the entry; the host batches it
//!    ([`BatchedReleases`]) and eventually sends a `Release` to the owner. A
//!    release never covers a reference that has not arrived yet: a reference
//!    still in flight to `P` is counted at the owner but not yet at `P`, so it
//!    outlives `P`'s release. A reference that arrives after the proxy died but
//!    before the host called `proxy_dropped` is counted with the others and
//!    gives a new proxy; whichever drop notification comes first releases them
//!    all.
//! 3. **Transfers A → B → C go through the owner's books.** B holds a proxy of
//!    an object native to A and sends it to C. B must not lend C its own
//!    references (B may release them at any moment). Instead B asks
//!    [`ImportTable::forward`], which returns a [`Transfer::Retain`]: B sends a
//!    [`Retain`] to A ("count one more reference held by C") *before* the frame
//!    that carries the reference to C, and while its proxy is still alive. All
//!    of B's frames pass through the master in order, so the master queues the
//!    retain on A's socket before it forwards the reference to C; C can only
//!    release what it received, and its release reaches A through the master
//!    behind the retain. A therefore applies [`ExportTable::retain`] before
//!    C's release, and B's own count at A is still positive when the retain
//!    arrives (B's release of the proxy that made the transfer is sent after
//!    it). The same holds when A, B or C is the master itself.
//! 4. **Back to the owner, nothing changes.** When the destination is the
//!    owner, `forward` returns [`Transfer::ToOwner`]: no message, no count.
//!    The owner resolves the reference with [`ExportTable::get`] and gets its
//!    very object. B's later release travels the same path as the reference,
//!    behind it, so the owner must resolve the reference before it applies
//!    that release (see below).
//! 5. **Peer loss.** When the master reports a peer gone, the owner calls
//!    [`ExportTable::peer_lost`] (the peer's references are dropped, and retains
//!    and exports for it are ignored from then on), the receiver calls
//!    [`ImportTable::owner_lost`] (proxies of that owner's objects release
//!    nothing) and [`BatchedReleases::owner_lost`]. Peer ids are never reused.
//!
//! # What the host must guarantee
//!
//! - Call [`ExportTable::export`] before writing the frame that carries the
//!   reference.
//! - Write the [`Retain`]s of a [`RetainBatch`] before the frame carrying the
//!   references, while the proxies are still alive.
//! - Apply `Retain` and `Release` messages in the order they are read from a
//!   socket, before the frames read after them are acted on (applying them on
//!   the reading thread does this).
//! - Resolve references to its own objects (`ExportTable::get`) that arrive in
//!   a frame before applying a `Release` read after that frame. If a frame is
//!   handed to another thread to be decoded while the reading thread goes on
//!   to apply releases, pin the object on the reading thread with
//!   [`ExportTable::retain`]`(id, self_peer, 1)` and drop the pin with
//!   [`ExportTable::release`]`(self_peer, id, 1)` once the decoder holds the
//!   object.
//! - Call [`ImportTable::proxy_dropped`] only when the proxy's weak handle no
//!   longer upgrades (a Python weakref callback, not `__del__`).
//!
//! # Examples
//!
//! A reference travels from A to B, then from B to C, and both drop it.
//!
//! ```
//! use cpy2py_proxy::{ExportTable, ImportTable, Received, RetainBatch, Transfer};
//! use cpy2py_wire::PeerId;
//! use std::rc::Rc;
//!
//! let (a, b, c) = (PeerId(1), PeerId(2), PeerId(3));
//! let mut exports_a: ExportTable<Rc<str>, usize> = ExportTable::new();
//! let mut imports_b = ImportTable::new();
//! let mut imports_c = ImportTable::new();
//!
//! // A sends its object to B: counted before the frame leaves.
//! let native: Rc<str> = Rc::from("the native object");
//! let id = exports_a.export(0x1000, || Rc::clone(&native), b);
//!
//! // B receives it and makes a proxy.
//! assert!(matches!(imports_b.receive(a, id), Received::New));
//! let proxy_b = Rc::new("proxy in B");
//! assert!(imports_b.insert(a, id, Rc::downgrade(&proxy_b)).is_none());
//!
//! // B sends it on to C: a retain for A goes out first.
//! let mut retains = RetainBatch::new();
//! retains.add(imports_b.forward(a, id, c));
//! for (owner, retain) in retains.take_all() {
//!     assert_eq!(owner, a);
//!     for (object, count) in retain.objects {
//!         exports_a.retain(object, retain.for_peer, count).unwrap();
//!     }
//! }
//! assert!(matches!(imports_c.receive(a, id), Received::New));
//! let proxy_c = Rc::new("proxy in C");
//! imports_c.insert(a, id, Rc::downgrade(&proxy_c));
//!
//! // B drops its proxy: A still has C's reference.
//! drop(proxy_b);
//! let (object, count) = imports_b.proxy_dropped(a, id).unwrap();
//! assert_eq!(exports_a.release(b, object, count).unwrap(), None);
//!
//! // C drops its proxy: the last reference, A gets its handle back to free.
//! drop(proxy_c);
//! let (object, count) = imports_c.proxy_dropped(a, id).unwrap();
//! assert!(exports_a.release(c, object, count).unwrap().is_some());
//! assert!(exports_a.is_empty());
//!
//! // A proxy passed back to its owner is the owner's own object.
//! assert_eq!(imports_b.forward(a, id, a), Transfer::ToOwner);
//! ```
//!
//! [`ObjectId`]: cpy2py_wire::ObjectId

mod class;
mod export;
mod import;
mod release;
mod transfer;

pub use crate::class::ClassTable;
pub use crate::export::{ExportError, ExportTable, Released};
pub use crate::import::{ImportTable, Received, WeakProxy};
pub use crate::release::{BatchedReleases, Due, ReleaseBatch, ReleasePolicy, ReleaseQueue};
pub use crate::transfer::{Retain, RetainBatch, Transfer};
