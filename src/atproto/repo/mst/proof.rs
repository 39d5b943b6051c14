//! Covering proofs: the MST nodes needed to prove a key's presence or absence and to
//! invert an operation on it (its path plus the paths to its left and right neighbours),
//! following the reference implementation's `getCoveringProof` exactly so that proof
//! block sets match the interop fixtures.

use super::super::blockstore::{BlockMap, Blockstore};
use super::node::{Item, Node};
use super::tree::{check_depth, node_block, view, Mst};
use super::MstError;

fn add_self(node: &Node, out: &mut BlockMap) -> Result<(), MstError> {
    let (cid, bytes) = node_block(node)?;
    out.insert(cid, bytes.into());
    Ok(())
}

fn tree_at(node: &Node, idx: Option<usize>) -> Option<&super::node::Link> {
    match idx.and_then(|i| node.items.get(i)) {
        Some(Item::Tree(link)) => Some(link),
        _ => None,
    }
}

fn for_key(
    node: &Node,
    store: &dyn Blockstore,
    key: &str,
    out: &mut BlockMap,
    depth: usize,
) -> Result<bool, MstError> {
    check_depth(depth)?;
    let idx = node.lower_bound(key);
    let found = matches!(node.items.get(idx), Some(Item::Leaf { key: k, .. }) if k == key);
    if !found {
        match tree_at(node, idx.checked_sub(1)) {
            // Nothing below could hold the key; the caller's node is the proof.
            None => return Ok(false),
            Some(link) => {
                let child = view(link, store)?;
                for_key(&child, store, key, out, depth + 1)?;
            }
        }
    }
    add_self(node, out)?;
    Ok(true)
}

fn left_sib(
    node: &Node,
    store: &dyn Blockstore,
    key: &str,
    out: &mut BlockMap,
    depth: usize,
) -> Result<(), MstError> {
    check_depth(depth)?;
    let idx = node.lower_bound(key);
    if let Some(link) = tree_at(node, idx.checked_sub(1)) {
        let child = view(link, store)?;
        left_sib(&child, store, key, out, depth + 1)?;
    }
    add_self(node, out)
}

fn right_sib(
    node: &Node,
    store: &dyn Blockstore,
    key: &str,
    out: &mut BlockMap,
    depth: usize,
) -> Result<(), MstError> {
    check_depth(depth)?;
    let idx = node.lower_bound(key);
    let found_idx = if idx < node.items.len() {
        Some(idx)
    } else {
        idx.checked_sub(1)
    };
    let next = match found_idx.and_then(|i| node.items.get(i)) {
        None => None,
        Some(Item::Tree(link)) => Some(link),
        Some(Item::Leaf { key: k, .. }) => {
            let i = if k == key {
                Some(idx + 1)
            } else {
                idx.checked_sub(1)
            };
            tree_at(node, i)
        }
    };
    if let Some(link) = next {
        let child = view(link, store)?;
        right_sib(&child, store, key, out, depth + 1)?;
    }
    add_self(node, out)
}

impl Mst {
    /// MST node blocks proving `key`'s value (or absence) and its neighbours; enough to
    /// invert a create/update/delete of `key`. Record blocks are not included.
    pub fn covering_proof(&self, store: &dyn Blockstore, key: &str) -> Result<BlockMap, MstError> {
        let mut out = BlockMap::new();
        let root = self.root_node();
        for_key(root, store, key, &mut out, 0)?;
        left_sib(root, store, key, &mut out, 0)?;
        right_sib(root, store, key, &mut out, 0)?;
        Ok(out)
    }

    /// Every node on the path from the root to where `key` is or would be: proves the
    /// record's presence or absence (what `com.atproto.sync.getRecord` returns). Unlike
    /// the covering proof this always includes the bottom node, even for absent keys.
    pub fn path_proof(&self, store: &dyn Blockstore, key: &str) -> Result<BlockMap, MstError> {
        fn rec(
            node: &Node,
            store: &dyn Blockstore,
            key: &str,
            out: &mut BlockMap,
            depth: usize,
        ) -> Result<(), MstError> {
            check_depth(depth)?;
            add_self(node, out)?;
            let idx = node.lower_bound(key);
            if matches!(node.items.get(idx), Some(Item::Leaf { key: k, .. }) if k == key) {
                return Ok(());
            }
            if let Some(link) = tree_at(node, idx.checked_sub(1)) {
                let child = view(link, store)?;
                rec(&child, store, key, out, depth + 1)?;
            }
            Ok(())
        }
        let mut out = BlockMap::new();
        rec(self.root_node(), store, key, &mut out, 0)?;
        Ok(out)
    }
}
