//! Per-file state that most transfers never set (what the receiver builds
//! a file on, which chunks come): a vector made only on the first change,
//! so a plain transfer of a million files pays nothing for it.

use std::ops::{Index, IndexMut};

/// `n` values, all `none` until one is changed.
pub(super) struct Lazy<T: 'static> {
    v: Vec<T>,
    n: usize,
    none: &'static T,
}

impl<T: Default + 'static> Lazy<T> {
    /// `n` values equal to `none` (which is `T::default()`).
    pub(super) fn new(n: usize, none: &'static T) -> Self {
        Lazy {
            v: Vec::new(),
            n,
            none,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.n
    }

    pub(super) fn get(&self, i: usize) -> Option<&T> {
        (i < self.n).then(|| &self[i])
    }

    /// The value to change, once some value was changed already (`None`
    /// when all are still `none`, or `i` is out of range).
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.v.get_mut(i)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        let rest = self.n - self.v.len();
        self.v.iter().chain(std::iter::repeat_n(self.none, rest))
    }

    /// The values changed so far (none when nothing was).
    pub(super) fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.v.iter_mut()
    }
}

impl<T: 'static> Index<usize> for Lazy<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        assert!(i < self.n, "index {i} past {}", self.n);
        self.v.get(i).unwrap_or(self.none)
    }
}

impl<T: Default + 'static> IndexMut<usize> for Lazy<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        if self.v.is_empty() {
            self.v = (0..self.n).map(|_| T::default()).collect();
        }
        &mut self.v[i]
    }
}
