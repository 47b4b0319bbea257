//! Request slots: a fixed-capacity pool of in-flight requests, indexed by
//! command identifier (CID).
//!
//! A CID carries the slot index in its low bits and the slot's generation in the
//! high bits. Each time a slot is reused its generation moves on, so a
//! completion for an earlier use of the slot (stale, or repeated by a faulty
//! device) does not match and is rejected. A CID is never trusted as an index
//! before it is checked against the pool.

use core::fmt;

/// A command identifier as the driver hands it out (NVMe 1.4 section 4.2, CDW0
/// bits 31:16).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(pub u16);

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({:#06x})", self.0)
    }
}

/// CID 0xFFFF is reserved (it means "no command" in the error log, section
/// 5.14.1.1); the pool never hands it out.
const RESERVED_CID: u16 = 0xffff;

/// A slot taken from the pool by [`SlotPool::reserve`], to be filled or
/// cancelled.
#[derive(Debug)]
pub(crate) struct Reserved(u16);

impl Reserved {
    /// The slot index.
    pub(crate) fn index(&self) -> usize {
        self.0 as usize
    }
}

/// A pool of `N` slots, each holding a `T` while its command is in flight.
pub(crate) struct SlotPool<T, const N: usize> {
    slots: [Option<T>; N],
    generation: [u16; N],
    free: heapless::Vec<u16, N>,
}

impl<T, const N: usize> SlotPool<T, N> {
    const INDEX_BITS: u32 = {
        assert!(N >= 1 && N <= 4096, "a slot pool holds 1 to 4096 requests");
        // Bits needed to number N slots (at least one).
        let bits = usize::BITS - (N - 1).leading_zeros();
        if bits == 0 {
            1
        } else {
            bits
        }
    };
    const GENERATION_MASK: u16 = (1u16 << (16 - Self::INDEX_BITS)) - 1;

    pub(crate) fn new() -> Self {
        let mut free = heapless::Vec::new();
        // Hand out low indices first: pop from the end.
        for i in (0..N as u16).rev() {
            // Cannot fail: exactly N pushes into a capacity-N vector.
            let _ = free.push(i);
        }
        let _ = Self::INDEX_BITS;
        SlotPool { slots: core::array::from_fn(|_| None), generation: [0; N], free }
    }

    /// The number of requests in flight.
    pub(crate) fn in_flight(&self) -> usize {
        N - self.free.len()
    }

    /// The number of free slots.
    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// True when no slot is free.
    #[cfg(test)]
    pub(crate) fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    fn cid_of(&self, index: u16) -> Cid {
        Cid((self.generation[index as usize] << Self::INDEX_BITS) | index)
    }

    /// Takes a free slot out of the pool without filling it yet, so that
    /// per-slot resources (PRP list pages) can be prepared first.
    pub(crate) fn reserve(&mut self) -> Option<Reserved> {
        self.free.pop().map(Reserved)
    }

    /// The index of the slot [`reserve`](Self::reserve) takes next, if any.
    pub(crate) fn next_free(&self) -> Option<usize> {
        self.free.last().map(|&i| i as usize)
    }

    /// Puts `value` in a free slot and returns its CID, or hands `value` back
    /// when the pool is full.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, value: T) -> Result<Cid, T> {
        match self.reserve() {
            Some(r) => Ok(self.fill(r, |_| value)),
            None => Err(value),
        }
    }

    /// Gives a reserved slot back unfilled.
    pub(crate) fn cancel(&mut self, reserved: Reserved) {
        // Cannot fail: a reserved index is not in `free`.
        let _ = self.free.push(reserved.0);
    }

    /// Gives slot `index` back to the pool if it is empty and not free: a
    /// reservation lost to a panic.
    pub(crate) fn reclaim(&mut self, index: usize) {
        let Ok(i) = u16::try_from(index) else { return };
        if index < N && self.slots[index].is_none() && !self.free.contains(&i) {
            let _ = self.free.push(i);
        }
    }

    /// Fills a reserved slot with the value `make` builds for the CID that
    /// names the slot now, and returns that CID.
    #[inline(always)]
    pub(crate) fn fill(&mut self, reserved: Reserved, make: impl FnOnce(Cid) -> T) -> Cid {
        let index = reserved.0;
        let i = index as usize;
        let mut generation = (self.generation[i] + 1) & Self::GENERATION_MASK;
        if (generation << Self::INDEX_BITS) | index == RESERVED_CID {
            generation = (generation + 1) & Self::GENERATION_MASK;
        }
        self.generation[i] = generation;
        let cid = self.cid_of(index);
        self.slots[i] = Some(make(cid));
        cid
    }

    /// The slot index a CID names (whether or not it is in flight).
    pub(crate) fn index_of(cid: Cid) -> usize {
        (cid.0 & ((1u16 << Self::INDEX_BITS) - 1)) as usize
    }

    /// The request in slot `index`, with the CID that names it now, if the
    /// slot is in use.
    pub(crate) fn at(&self, index: usize) -> Option<(Cid, &T)> {
        let value = self.slots.get(index)?.as_ref()?;
        Some((self.cid_of(index as u16), value))
    }

    /// Mutable access to the request in slot `index`, with its CID, if the
    /// slot is in use.
    pub(crate) fn at_mut(&mut self, index: usize) -> Option<(Cid, &mut T)> {
        if index >= N {
            return None;
        }
        let cid = self.cid_of(u16::try_from(index).ok()?);
        let value = self.slots.get_mut(index)?.as_mut()?;
        Some((cid, value))
    }

    /// Peeks at the request that `cid` names, if it is in flight now.
    pub(crate) fn get(&self, cid: Cid) -> Option<&T> {
        let index = self.check(cid)?;
        self.slots[index].as_ref()
    }

    /// Mutable access to the request that `cid` names, if it is in flight now.
    pub(crate) fn get_mut(&mut self, cid: Cid) -> Option<&mut T> {
        let index = self.check(cid)?;
        self.slots[index].as_mut()
    }

    /// Gives the in-flight request `cid` a new generation, for a command that is
    /// submitted again: completions for the old CID no longer match. Returns
    /// the new CID.
    pub(crate) fn renew(&mut self, cid: Cid) -> Option<Cid> {
        let index = self.check(cid)? as u16;
        let i = index as usize;
        let mut generation = (self.generation[i] + 1) & Self::GENERATION_MASK;
        if (generation << Self::INDEX_BITS) | index == RESERVED_CID {
            generation = (generation + 1) & Self::GENERATION_MASK;
        }
        self.generation[i] = generation;
        Some(self.cid_of(index))
    }

    /// Every request in flight, with its CID.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Cid, &mut T)> + '_ {
        let generation = &self.generation;
        self.slots.iter_mut().enumerate().filter_map(move |(i, slot)| {
            let cid = Cid((generation[i] << Self::INDEX_BITS) | i as u16);
            slot.as_mut().map(|t| (cid, t))
        })
    }

    /// Takes out the first request at index `from` or later for which `pick`
    /// is true, with its index and CID.
    pub(crate) fn take_next(
        &mut self,
        from: usize,
        mut pick: impl FnMut(&T) -> bool,
    ) -> Option<(usize, Cid, T)> {
        let i = (from..N).find(|&i| self.slots[i].as_ref().is_some_and(&mut pick))?;
        let cid = self.cid_of(i as u16);
        let value = self.slots[i].take()?;
        // Cannot fail: the slot was occupied, so its index is not in `free`.
        let _ = self.free.push(i as u16);
        Some((i, cid, value))
    }

    /// The slot index `cid` names, if it names the request in that slot now.
    #[inline]
    pub(crate) fn index(&self, cid: Cid) -> Option<usize> {
        self.check(cid)
    }

    /// The slot index `cid` names and its request, if `cid` names the
    /// request in that slot now (one check of index, generation and
    /// occupancy).
    #[inline]
    pub(crate) fn lookup(&self, cid: Cid) -> Option<(usize, &T)> {
        let index = self.check(cid)?;
        Some((index, self.slots[index].as_ref()?))
    }

    /// Frees slot `index`, dropping what is left of its value in place
    /// (nothing is moved out: the caller took what it needed through
    /// [`at_mut`](Self::at_mut) or [`get_mut`](Self::get_mut)).
    #[inline]
    pub(crate) fn vacate(&mut self, index: usize) {
        if let Some(slot @ Some(_)) = self.slots.get_mut(index) {
            *slot = None;
            let _ = self.free.push(index as u16);
        }
    }

    /// Takes the request that `cid` names out of its slot, if `cid` is in flight
    /// now; `None` for an index out of range, a free slot, or an old generation.
    pub(crate) fn remove(&mut self, cid: Cid) -> Option<T> {
        let index = self.check(cid)?;
        let value = self.slots[index].take()?;
        // Cannot fail: the slot was occupied, so its index is not in `free`.
        let _ = self.free.push(index as u16);
        Some(value)
    }

    fn check(&self, cid: Cid) -> Option<usize> {
        let index = Self::index_of(cid);
        if index >= N || self.slots[index].is_none() {
            return None;
        }
        if self.cid_of(index as u16) != cid {
            return None;
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_and_refill() {
        let mut pool: SlotPool<u32, 4> = SlotPool::new();
        let cids: Vec<Cid> = (0..4).map(|v| pool.insert(v).unwrap()).collect();
        assert!(pool.is_full());
        assert_eq!(pool.insert(99), Err(99));
        assert_eq!(pool.in_flight(), 4);
        assert_eq!(pool.remove(cids[2]), Some(2));
        assert_eq!(pool.in_flight(), 3);
        let again = pool.insert(7).unwrap();
        assert_ne!(again, cids[2], "a reused slot gets a new generation");
        assert_eq!(pool.remove(again), Some(7));
    }

    #[test]
    fn stale_and_repeated_cids_are_rejected() {
        let mut pool: SlotPool<u32, 8> = SlotPool::new();
        let a = pool.insert(1).unwrap();
        assert_eq!(pool.remove(a), Some(1));
        assert_eq!(pool.remove(a), None, "repeated completion");
        let b = pool.insert(2).unwrap();
        assert_eq!(a.0 & 7, b.0 & 7, "same slot");
        assert_eq!(pool.remove(a), None, "stale generation");
        assert_eq!(pool.get(b), Some(&2));
        assert_eq!(pool.remove(b), Some(2));
    }

    #[test]
    fn out_of_range_cids_are_rejected() {
        let mut pool: SlotPool<u32, 5> = SlotPool::new();
        let _ = pool.insert(1).unwrap();
        // Index bits are 3 for N = 5: indices 5, 6, 7 do not exist.
        for cid in [5u16, 6, 7, 0xffff, 0x1235] {
            assert_eq!(pool.remove(Cid(cid)), None);
        }
    }

    #[test]
    fn generations_wrap_and_never_use_ffff() {
        let mut pool: SlotPool<u32, 1> = SlotPool::new();
        let mut seen = std::collections::HashSet::new();
        // Miri is slow: fewer rounds there (still past one generation wrap).
        let (rounds, distinct) = if cfg!(miri) { (40_000u32, 3_000) } else { (200_000, 30_000) };
        for i in 0..rounds {
            let cid = pool.insert(i).unwrap();
            assert_ne!(cid.0, 0xffff);
            if i < distinct {
                seen.insert(cid);
            }
            assert_eq!(pool.remove(cid), Some(i));
        }
        assert_eq!(seen.len() as u32, distinct, "no CID repeats within a generation cycle");
    }

    #[test]
    fn renewed_cids_retire_the_old_one() {
        let mut pool: SlotPool<u32, 8> = SlotPool::new();
        let a = pool.insert(5).unwrap();
        let b = pool.renew(a).unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.get(a), None, "the old CID is stale now");
        assert_eq!(pool.remove(b), Some(5));
        assert_eq!(pool.renew(b), None, "nothing to renew once completed");
    }

    #[test]
    fn take_next_walks_forward() {
        let mut pool: SlotPool<u32, 8> = SlotPool::new();
        let cids: Vec<Cid> = (0..6).map(|v| pool.insert(v).unwrap()).collect();
        let mut got = Vec::new();
        let mut from = 0;
        while let Some((i, cid, v)) = pool.take_next(from, |v| v % 2 == 0) {
            assert_eq!(cid, cids[v as usize]);
            got.push(v);
            from = i + 1;
        }
        assert_eq!(got, vec![0, 2, 4]);
        assert_eq!(pool.in_flight(), 3);
        assert_eq!(pool.iter_mut().count(), 3);
        assert_eq!(pool.at(SlotPool::<u32, 8>::index_of(cids[1])).map(|(c, v)| (c, *v)), Some((cids[1], 1)));
        assert!(pool.at(0).is_none(), "taken");
    }

    #[test]
    fn drain_returns_everything_once() {
        let mut pool: SlotPool<u32, 16> = SlotPool::new();
        for v in 0..10 {
            pool.insert(v).unwrap();
        }
        let mut got: Vec<u32> =
            core::iter::from_fn(|| pool.take_next(0, |_| true).map(|(_, _, v)| v)).collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(pool.in_flight(), 0);
    }
}
