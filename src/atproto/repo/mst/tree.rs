//! The mutable MST: lazy loading from a blockstore, insert/update/delete that keep the
//! canonical shape, ordered range listing, and serialization of changed nodes.

use super::super::blockstore::{BlockMap, Blockstore};
use super::super::cid::{cid_for_dag_cbor, Cid};
use super::node::{fetch_node, key_height, node_layer, Item, Link, Node};
use super::{validate_key, MstError};
use std::borrow::Cow;
use std::ops::Bound;

/// A Merkle Search Tree rooted in memory. Nodes are read from the blockstore only when an
/// operation walks into them; changed nodes stay in memory until [`Mst::commit`].
#[derive(Debug, Clone)]
pub struct Mst {
    root: Node,
    /// Layer of the root node (0 for an empty tree).
    layer: u32,
}

impl Default for Mst {
    fn default() -> Self {
        Self::new()
    }
}

fn load<'a>(link: &'a mut Link, store: &dyn Blockstore) -> Result<&'a mut Node, MstError> {
    if let Link::Stored(cid) = link {
        let node = fetch_node(store, cid)?;
        *link = Link::Loaded(Box::new(node));
    }
    match link {
        Link::Loaded(node) => Ok(node),
        // Replaced just above.
        Link::Stored(_) => unreachable!("link was loaded above"),
    }
}

fn take_node(link: Link, store: &dyn Blockstore) -> Result<Node, MstError> {
    match link {
        Link::Stored(cid) => fetch_node(store, &cid),
        Link::Loaded(node) => Ok(*node),
    }
}

pub(crate) fn view<'a>(link: &'a Link, store: &dyn Blockstore) -> Result<Cow<'a, Node>, MstError> {
    match link {
        Link::Stored(cid) => Ok(Cow::Owned(fetch_node(store, cid)?)),
        Link::Loaded(node) => Ok(Cow::Borrowed(node)),
    }
}

/// A node holding only `key` at `layer`, with leafless bridge nodes down from `layer`.
fn single(layer: u32, height: u32, key: &str, value: Cid) -> Node {
    let mut node = Node {
        items: vec![Item::Leaf {
            key: key.to_string(),
            value,
        }],
        cid: None,
    };
    for _ in height..layer {
        node = Node {
            items: vec![Item::Tree(Link::Loaded(Box::new(node)))],
            cid: None,
        };
    }
    node
}

/// Deepest path a valid tree can have (one node per layer of a sha256 key height, plus
/// the bottom); anything deeper is hostile input and would otherwise exhaust the stack.
pub(crate) const MAX_TREE_DEPTH: usize = 130;

pub(crate) fn check_depth(depth: usize) -> Result<(), MstError> {
    if depth > MAX_TREE_DEPTH {
        Err(MstError::TooDeep)
    } else {
        Ok(())
    }
}

fn non_empty(items: Vec<Item>) -> Option<Node> {
    (!items.is_empty()).then_some(Node { items, cid: None })
}

/// Splits a subtree around a key that is not in it into (keys < key, keys > key).
fn split(
    link: Link,
    key: &str,
    store: &dyn Blockstore,
    depth: usize,
) -> Result<(Option<Node>, Option<Node>), MstError> {
    check_depth(depth)?;
    let mut node = take_node(link, store)?;
    let idx = node.lower_bound(key);
    let right_items = node.items.split_off(idx);
    let mut left_items = node.items;
    let mut right_prefix = None;
    if let Some(Item::Tree(_)) = left_items.last() {
        if let Some(Item::Tree(child)) = left_items.pop() {
            let (l, r) = split(child, key, store, depth + 1)?;
            if let Some(l) = l {
                left_items.push(Item::Tree(Link::Loaded(Box::new(l))));
            }
            right_prefix = r;
        }
    }
    let mut right = Vec::with_capacity(right_items.len() + 1);
    if let Some(r) = right_prefix {
        right.push(Item::Tree(Link::Loaded(Box::new(r))));
    }
    right.extend(right_items);
    Ok((non_empty(left_items), non_empty(right)))
}

/// Joins two adjacent subtrees of the same layer (all keys of `a` < all keys of `b`).
fn merge(a: Link, b: Link, store: &dyn Blockstore, depth: usize) -> Result<Node, MstError> {
    check_depth(depth)?;
    let mut left = take_node(a, store)?.items;
    let mut right = take_node(b, store)?.items;
    if matches!(left.last(), Some(Item::Tree(_))) && matches!(right.first(), Some(Item::Tree(_))) {
        if let (Some(Item::Tree(la)), Item::Tree(rb)) = (left.pop(), right.remove(0)) {
            let merged = merge(la, rb, store, depth + 1)?;
            left.push(Item::Tree(Link::Loaded(Box::new(merged))));
        }
    }
    left.extend(right);
    Ok(Node {
        items: left,
        cid: None,
    })
}

fn insert_rec(
    node: &mut Node,
    layer: u32,
    key: &str,
    height: u32,
    value: Cid,
    store: &dyn Blockstore,
) -> Result<Option<Cid>, MstError> {
    let idx = node.lower_bound(key);
    if let Some(Item::Leaf { key: k, value: v }) = node.items.get_mut(idx) {
        if k == key {
            let old = *v;
            if old != value {
                *v = value;
                node.cid = None;
            }
            return Ok(Some(old));
        }
    }
    let gap_tree = idx > 0 && matches!(node.items[idx - 1], Item::Tree(_));
    if height == layer {
        let leaf = Item::Leaf {
            key: key.to_string(),
            value,
        };
        if gap_tree {
            let Item::Tree(link) = node.items.remove(idx - 1) else {
                unreachable!("checked to be a tree")
            };
            let (l, r) = split(link, key, store, 0)?;
            let mut at = idx - 1;
            if let Some(l) = l {
                node.items.insert(at, Item::Tree(Link::Loaded(Box::new(l))));
                at += 1;
            }
            node.items.insert(at, leaf);
            if let Some(r) = r {
                node.items
                    .insert(at + 1, Item::Tree(Link::Loaded(Box::new(r))));
            }
        } else {
            node.items.insert(idx, leaf);
        }
        node.cid = None;
        return Ok(None);
    }
    if gap_tree {
        let Item::Tree(link) = &mut node.items[idx - 1] else {
            unreachable!("checked to be a tree")
        };
        let child = load(link, store)?;
        let old = insert_rec(child, layer - 1, key, height, value, store)?;
        if child.cid.is_none() {
            node.cid = None;
        }
        Ok(old)
    } else {
        let sub = single(layer - 1, height, key, value);
        node.items
            .insert(idx, Item::Tree(Link::Loaded(Box::new(sub))));
        node.cid = None;
        Ok(None)
    }
}

fn delete_rec(
    node: &mut Node,
    layer: u32,
    key: &str,
    height: u32,
    store: &dyn Blockstore,
) -> Result<Option<Cid>, MstError> {
    let idx = node.lower_bound(key);
    if height == layer {
        let old = match node.items.get(idx) {
            Some(Item::Leaf { key: k, value }) if k == key => *value,
            _ => return Ok(None),
        };
        node.items.remove(idx);
        node.cid = None;
        let both_trees = idx > 0
            && matches!(node.items.get(idx - 1), Some(Item::Tree(_)))
            && matches!(node.items.get(idx), Some(Item::Tree(_)));
        if both_trees {
            let right = node.items.remove(idx);
            let left = node.items.remove(idx - 1);
            if let (Item::Tree(a), Item::Tree(b)) = (left, right) {
                let merged = merge(a, b, store, 0)?;
                node.items
                    .insert(idx - 1, Item::Tree(Link::Loaded(Box::new(merged))));
            }
        }
        return Ok(Some(old));
    }
    if idx == 0 || !matches!(node.items[idx - 1], Item::Tree(_)) {
        return Ok(None);
    }
    let Item::Tree(link) = &mut node.items[idx - 1] else {
        unreachable!("checked to be a tree")
    };
    let child = load(link, store)?;
    let old = delete_rec(child, layer - 1, key, height, store)?;
    if old.is_some() {
        node.cid = None;
        if child.items.is_empty() {
            node.items.remove(idx - 1);
        }
    }
    Ok(old)
}

/// CID of a node, encoding changed nodes; new blocks go to `out` when given, and the
/// computed CIDs are cached only in that case (so nothing is marked clean unsaved).
fn node_cid_mut(node: &mut Node, out: &mut BlockMap) -> Result<Cid, MstError> {
    if let Some(cid) = node.cid {
        return Ok(cid);
    }
    for item in node.items.iter_mut() {
        if let Item::Tree(Link::Loaded(child)) = item {
            node_cid_mut(child, out)?;
        }
    }
    let bytes = node.encode_with(link_cid_cached)?;
    let cid = cid_for_dag_cbor(&bytes);
    out.insert(cid, bytes.into());
    node.cid = Some(cid);
    Ok(cid)
}

fn link_cid_cached(link: &Link) -> Result<Cid, MstError> {
    match link {
        Link::Stored(cid) => Ok(*cid),
        Link::Loaded(n) => node_cid(n),
    }
}

/// CID of a node without caching (read-only path).
pub(crate) fn node_cid(node: &Node) -> Result<Cid, MstError> {
    if let Some(cid) = node.cid {
        return Ok(cid);
    }
    let bytes = node.encode_with(link_cid_cached)?;
    Ok(cid_for_dag_cbor(&bytes))
}

/// (cid, bytes) of a node, for proofs.
pub(crate) fn node_block(node: &Node) -> Result<(Cid, Vec<u8>), MstError> {
    let bytes = node.encode_with(link_cid_cached)?;
    Ok((cid_for_dag_cbor(&bytes), bytes))
}

struct Lister<'r> {
    start: Bound<&'r str>,
    end: Bound<&'r str>,
    reverse: bool,
    limit: usize,
    out: Vec<(String, Cid)>,
}

impl Lister<'_> {
    fn in_range(&self, k: &str) -> bool {
        let after_start = match self.start {
            Bound::Included(s) => k >= s,
            Bound::Excluded(s) => k > s,
            Bound::Unbounded => true,
        };
        let before_end = match self.end {
            Bound::Included(e) => k <= e,
            Bound::Excluded(e) => k < e,
            Bound::Unbounded => true,
        };
        after_start && before_end
    }

    /// True when a subtree whose keys all lie strictly between `lo` and `hi` cannot
    /// hold any key of the range.
    fn disjoint(&self, lo: Option<&str>, hi: Option<&str>) -> bool {
        let below = match (hi, self.start) {
            (Some(h), Bound::Included(s) | Bound::Excluded(s)) => h <= s,
            _ => false,
        };
        let above = match (lo, self.end) {
            (Some(l), Bound::Included(e) | Bound::Excluded(e)) => l >= e,
            _ => false,
        };
        below || above
    }

    fn walk(
        &mut self,
        node: &Node,
        store: &dyn Blockstore,
        lo: Option<&str>,
        hi: Option<&str>,
        depth: usize,
    ) -> Result<(), MstError> {
        check_depth(depth)?;
        let n = node.items.len();
        for step in 0..n {
            if self.out.len() >= self.limit {
                return Ok(());
            }
            let i = if self.reverse { n - 1 - step } else { step };
            match &node.items[i] {
                Item::Leaf { key, value } => {
                    if self.in_range(key) {
                        self.out.push((key.clone(), *value));
                    }
                }
                Item::Tree(link) => {
                    let sub_lo = node.items[..i].iter().rev().find_map(leaf_key).or(lo);
                    let sub_hi = node.items[i + 1..].iter().find_map(leaf_key).or(hi);
                    if !self.disjoint(sub_lo, sub_hi) {
                        let child = view(link, store)?;
                        self.walk(&child, store, sub_lo, sub_hi, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn leaf_key(item: &Item) -> Option<&str> {
    match item {
        Item::Leaf { key, .. } => Some(key.as_str()),
        Item::Tree(_) => None,
    }
}

impl Mst {
    /// An empty tree.
    pub fn new() -> Mst {
        Mst {
            root: Node::default(),
            layer: 0,
        }
    }

    /// Opens the tree whose root node is `root` in `store` (only the root is read).
    pub fn load(store: &dyn Blockstore, root: Cid) -> Result<Mst, MstError> {
        let node = fetch_node(store, &root)?;
        let layer = node_layer(store, &node)?;
        Ok(Mst { root: node, layer })
    }

    /// Builds a tree from unordered entries (each key validated).
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, Cid)>,
    ) -> Result<Mst, MstError> {
        let mut mst = Mst::new();
        let empty = super::super::blockstore::MemoryBlockstore::new();
        for (k, v) in entries {
            mst.insert(&empty, k, v)?;
        }
        Ok(mst)
    }

    pub(crate) fn root_node(&self) -> &Node {
        &self.root
    }

    /// Looks up a key.
    pub fn get(&self, store: &dyn Blockstore, key: &str) -> Result<Option<Cid>, MstError> {
        let height = key_height(key.as_bytes());
        if height > self.layer {
            return Ok(None);
        }
        let mut node: Cow<'_, Node> = Cow::Borrowed(&self.root);
        let mut layer = self.layer;
        loop {
            let idx = node.lower_bound(key);
            if let Some(Item::Leaf { key: k, value }) = node.items.get(idx) {
                if k == key {
                    return Ok(Some(*value));
                }
            }
            if layer == height || idx == 0 {
                return Ok(None);
            }
            let next = match (&node, &node.items[idx - 1]) {
                (Cow::Borrowed(n), Item::Tree(_)) => match &n.items[idx - 1] {
                    Item::Tree(link) => view(link, store)?,
                    Item::Leaf { .. } => return Ok(None),
                },
                (Cow::Owned(_), Item::Tree(link)) => Cow::Owned(take_node(link.clone(), store)?),
                (_, Item::Leaf { .. }) => return Ok(None),
            };
            node = next;
            layer -= 1;
        }
    }

    /// Inserts or updates; returns the previous value.
    pub fn insert(
        &mut self,
        store: &dyn Blockstore,
        key: &str,
        value: Cid,
    ) -> Result<Option<Cid>, MstError> {
        validate_key(key)?;
        let height = key_height(key.as_bytes());
        while self.layer < height {
            if !self.root.items.is_empty() {
                let old = std::mem::take(&mut self.root);
                self.root
                    .items
                    .push(Item::Tree(Link::Loaded(Box::new(old))));
            }
            self.root.cid = None;
            self.layer += 1;
        }
        insert_rec(&mut self.root, self.layer, key, height, value, store)
    }

    /// Deletes a key; returns the removed value.
    pub fn delete(&mut self, store: &dyn Blockstore, key: &str) -> Result<Option<Cid>, MstError> {
        let height = key_height(key.as_bytes());
        if height > self.layer {
            return Ok(None);
        }
        let old = delete_rec(&mut self.root, self.layer, key, height, store)?;
        // The root never is a leafless single-child node: drop such layers.
        while self.root.items.len() == 1 && matches!(self.root.items[0], Item::Tree(_)) {
            let Some(Item::Tree(link)) = self.root.items.pop() else {
                unreachable!("checked above")
            };
            self.root = take_node(link, store)?;
            self.layer = self.layer.saturating_sub(1);
        }
        if self.root.items.is_empty() {
            self.layer = 0;
        }
        Ok(old)
    }

    /// Root CID without marking anything as saved.
    pub fn root_cid(&self) -> Result<Cid, MstError> {
        node_cid(&self.root)
    }

    /// Encodes every changed node; returns the root CID and the new node blocks, which
    /// the caller must persist (they are considered saved afterwards).
    pub fn commit(&mut self) -> Result<(Cid, BlockMap), MstError> {
        let mut out = BlockMap::new();
        let cid = node_cid_mut(&mut self.root, &mut out)?;
        Ok((cid, out))
    }

    /// Entries with keys in `(start, end)` in key order (or reverse), at most `limit`.
    pub fn range(
        &self,
        store: &dyn Blockstore,
        start: Bound<&str>,
        end: Bound<&str>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(String, Cid)>, MstError> {
        let mut lister = Lister {
            start,
            end,
            reverse,
            limit,
            out: Vec::new(),
        };
        lister.walk(&self.root, store, None, None, 0)?;
        Ok(lister.out)
    }

    /// All entries in key order.
    pub fn entries(&self, store: &dyn Blockstore) -> Result<Vec<(String, Cid)>, MstError> {
        self.range(store, Bound::Unbounded, Bound::Unbounded, false, usize::MAX)
    }

    /// Entries under `prefix` (e.g. `"io.atcr.tag/"`), starting after `cursor` (a full key).
    pub fn list_prefix(
        &self,
        store: &dyn Blockstore,
        prefix: &str,
        cursor: Option<&str>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(String, Cid)>, MstError> {
        // Smallest string greater than every key with this prefix: bump the last byte.
        // MST keys are ASCII, so the bumped byte stays a valid char below 0x80.
        let upper: Option<String> = prefix.bytes().last().map(|b| {
            let mut s = prefix[..prefix.len() - 1].to_string();
            s.push(char::from(b + 1));
            s
        });
        let mut start = Bound::Included(prefix);
        let mut end = upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        match (cursor, reverse) {
            (Some(c), false) if c >= prefix => start = Bound::Excluded(c),
            (Some(c), true) => {
                let tighter = match end {
                    Bound::Excluded(e) => c < e,
                    _ => true,
                };
                if tighter {
                    end = Bound::Excluded(c);
                }
            }
            _ => {}
        }
        self.range(store, start, end, reverse, limit)
    }

    /// Adds every node block reachable from the root to `out` (for a full export).
    pub fn collect_blocks(
        &self,
        store: &dyn Blockstore,
        out: &mut BlockMap,
    ) -> Result<(), MstError> {
        fn rec(
            node: &Node,
            store: &dyn Blockstore,
            out: &mut BlockMap,
            depth: usize,
        ) -> Result<(), MstError> {
            check_depth(depth)?;
            let (cid, bytes) = node_block(node)?;
            out.insert(cid, bytes.into());
            for item in &node.items {
                if let Item::Tree(link) = item {
                    let child = view(link, store)?;
                    rec(&child, store, out, depth + 1)?;
                }
            }
            Ok(())
        }
        rec(&self.root, store, out, 0)
    }
}
