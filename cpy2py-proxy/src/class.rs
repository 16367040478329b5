//! Class identity across interpreters.

use std::collections::HashMap;

/// Host classes by identity: a class is the same in every interpreter if its
/// module and qualified name are (what [`ObjectRef::class`] carries).
///
/// Looking up takes `&str`s and does not allocate.
///
/// # Examples
///
/// ```
/// use cpy2py_proxy::ClassTable;
///
/// let mut classes = ClassTable::new();
/// classes.insert("shop", "Counter", 1);
/// assert_eq!(classes.get("shop", "Counter"), Some(&1));
/// assert_eq!(*classes.get_or_insert_with("shop", "Basket", || 2), 2);
/// assert_eq!(*classes.get_or_insert_with("shop", "Basket", || 3), 2);
/// assert_eq!(classes.len(), 2);
/// ```
///
/// [`ObjectRef::class`]: cpy2py_wire::ObjectRef::class
#[derive(Debug)]
pub struct ClassTable<C> {
    modules: HashMap<String, HashMap<String, C>>,
    len: usize,
}

impl<C> Default for ClassTable<C> {
    fn default() -> Self {
        ClassTable {
            modules: HashMap::new(),
            len: 0,
        }
    }
}

impl<C> ClassTable<C> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The class `qualname` of `module`, if known.
    pub fn get(&self, module: &str, qualname: &str) -> Option<&C> {
        self.modules.get(module)?.get(qualname)
    }

    /// Records `class` as `qualname` of `module`; returns the class it replaces.
    pub fn insert(
        &mut self,
        module: impl Into<String>,
        qualname: impl Into<String>,
        class: C,
    ) -> Option<C> {
        let old = self
            .modules
            .entry(module.into())
            .or_default()
            .insert(qualname.into(), class);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The class `qualname` of `module`, recorded from `make` if unknown.
    pub fn get_or_insert_with(
        &mut self,
        module: &str,
        qualname: &str,
        make: impl FnOnce() -> C,
    ) -> &C {
        let known = self
            .modules
            .get(module)
            .is_some_and(|classes| classes.contains_key(qualname));
        if !known {
            self.insert(module, qualname, make());
        }
        &self.modules[module][qualname]
    }

    /// Forgets the class `qualname` of `module` and returns it.
    pub fn remove(&mut self, module: &str, qualname: &str) -> Option<C> {
        let classes = self.modules.get_mut(module)?;
        let class = classes.remove(qualname)?;
        if classes.is_empty() {
            self.modules.remove(module);
        }
        self.len -= 1;
        Some(class)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no class.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_replace_remove() {
        let mut classes = ClassTable::new();
        assert!(classes.is_empty());
        assert_eq!(classes.insert("m", "A", 1), None);
        assert_eq!(classes.insert("m", "A.Inner", 2), None);
        assert_eq!(classes.insert("n", "A", 3), None);
        assert_eq!(classes.len(), 3);
        assert_eq!(classes.get("m", "A"), Some(&1));
        assert_eq!(classes.get("n", "A"), Some(&3));
        assert_eq!(classes.get("m", "B"), None);
        assert_eq!(classes.get("o", "A"), None);
        assert_eq!(classes.insert("m", "A", 4), Some(1));
        assert_eq!(classes.len(), 3);
        assert_eq!(classes.remove("m", "A"), Some(4));
        assert_eq!(classes.remove("m", "A"), None);
        assert_eq!(classes.remove("n", "A"), Some(3));
        assert_eq!(classes.len(), 1);
        assert_eq!(classes.get("m", "A.Inner"), Some(&2));
    }

    #[test]
    fn get_or_insert_with_makes_once() {
        let mut classes = ClassTable::new();
        let mut made = 0;
        for _ in 0..3 {
            classes.get_or_insert_with("m", "A", || {
                made += 1;
                "class A"
            });
        }
        assert_eq!(made, 1);
        assert_eq!(classes.len(), 1);
    }
}
