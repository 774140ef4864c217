//! The items of a pool job, by index. An open job serves one client for as long as it
//! likes (a Python `Pool`, map after map): the items whose results its client has read
//! are dropped from the front (see [`Items::release`]), so indexes start at `base` and
//! memory stays bounded by what is still unread.

use std::collections::VecDeque;
use std::ops::{Index, IndexMut};

use super::{Item, ItemState};

pub(super) struct Items {
    /// Index of the first item kept: every item before it was released.
    base: usize,
    items: VecDeque<Item>,
}

impl Items {
    pub(super) fn new(base: usize, items: Vec<Item>) -> Items {
        Items {
            base,
            items: items.into(),
        }
    }

    /// Items ever added (released ones included): the next index.
    pub(super) fn len(&self) -> usize {
        self.base + self.items.len()
    }

    /// The first index still kept.
    pub(super) fn base(&self) -> usize {
        self.base
    }

    pub(super) fn get(&self, index: usize) -> Option<&Item> {
        self.items.get(index.checked_sub(self.base)?)
    }

    pub(super) fn get_mut(&mut self, index: usize) -> Option<&mut Item> {
        self.items.get_mut(index.checked_sub(self.base)?)
    }

    pub(super) fn push(&mut self, item: Item) {
        self.items.push_back(item);
    }

    /// The kept items.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Item> {
        self.items.iter()
    }

    /// The kept items with their indexes.
    pub(super) fn indexed(&self) -> impl Iterator<Item = (usize, &Item)> {
        (self.base..).zip(self.items.iter())
    }

    /// Drops the finished items before `end` from the front (it stops at the first one
    /// not finished); returns how many were dropped, and how many of those had failed.
    pub(super) fn release(&mut self, end: usize) -> (usize, usize) {
        let (mut dropped, mut failed) = (0, 0);
        while self.base < end {
            match self.items.front().map(|i| &i.state) {
                Some(ItemState::Done(result)) => failed += usize::from(!result.ok),
                _ => break,
            }
            self.items.pop_front();
            self.base += 1;
            dropped += 1;
        }
        (dropped, failed)
    }
}

impl Index<usize> for Items {
    type Output = Item;

    /// A kept item (pending and running items are never released).
    fn index(&self, index: usize) -> &Item {
        self.get(index)
            .unwrap_or_else(|| panic!("pool item {index} was released (kept from {})", self.base))
    }
}

impl IndexMut<usize> for Items {
    fn index_mut(&mut self, index: usize) -> &mut Item {
        let base = self.base;
        self.get_mut(index)
            .unwrap_or_else(|| panic!("pool item {index} was released (kept from {base})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::PoolItem;

    fn item(done: bool) -> Item {
        Item {
            input: "x".into(),
            attempts: 0,
            state: if done {
                ItemState::Done(PoolItem {
                    index: 0,
                    input: "x".into(),
                    ok: true,
                    exit: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    error: None,
                    truncated: false,
                    attempts: 1,
                    started_ms: 0,
                    ended_ms: 0,
                })
            } else {
                ItemState::Pending
            },
        }
    }

    #[test]
    fn release_drops_finished_items_from_the_front_and_keeps_indexes() {
        let mut items = Items::new(0, vec![item(true), item(true), item(false), item(true)]);
        assert_eq!(items.release(4), (2, 0));
        // Stops at the first unfinished item, whatever the client asked.
        assert_eq!((items.base(), items.len()), (2, 4));
        assert!(items.get(1).is_none());
        assert!(matches!(items[2].state, ItemState::Pending));
        assert_eq!(items.indexed().map(|(i, _)| i).collect::<Vec<_>>(), [2, 3]);
        items[2] = item(true);
        items.push(item(false));
        assert_eq!(items.release(4), (2, 0));
        assert_eq!((items.base(), items.len()), (4, 5));
        assert_eq!(items.release(4), (0, 0));
    }
}
