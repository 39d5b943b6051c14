//! Diff of two stored trees. Node layers are intrinsic (a node's layer follows from its
//! keys), so walking both trees one layer at a time and dropping node CIDs present on
//! both sides skips every shared subtree without reading it.

use super::super::blockstore::Blockstore;
use super::super::cid::Cid;
use super::node::{fetch_node, node_layer, Item, Link};
use super::tree::node_cid;
use super::MstError;
use std::collections::{BTreeMap, BTreeSet};

/// Record-level changes from an old tree to a new one, plus node-level changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MstDiff {
    /// key, new value
    pub adds: Vec<(String, Cid)>,
    /// key, old value, new value
    pub updates: Vec<(String, Cid, Cid)>,
    /// key, old value
    pub deletes: Vec<(String, Cid)>,
    /// MST node CIDs reachable from the new root but not from the old one.
    pub new_nodes: BTreeSet<Cid>,
    /// MST node CIDs reachable from the old root but not from the new one.
    pub removed_nodes: BTreeSet<Cid>,
}

/// Diffs two trees whose nodes are in `store`; `old` = None means the empty tree.
pub fn diff_trees(store: &dyn Blockstore, old: Option<Cid>, new: Cid) -> Result<MstDiff, MstError> {
    let mut old_at: BTreeMap<u32, BTreeSet<Cid>> = BTreeMap::new();
    let mut new_at: BTreeMap<u32, BTreeSet<Cid>> = BTreeMap::new();
    if let Some(o) = old {
        let node = fetch_node(store, &o)?;
        old_at
            .entry(node_layer(store, &node)?)
            .or_default()
            .insert(o);
    }
    let node = fetch_node(store, &new)?;
    new_at
        .entry(node_layer(store, &node)?)
        .or_default()
        .insert(new);

    let mut old_leaves: BTreeMap<String, Cid> = BTreeMap::new();
    let mut new_leaves: BTreeMap<String, Cid> = BTreeMap::new();
    let mut out = MstDiff::default();
    let top = old_at
        .keys()
        .chain(new_at.keys())
        .copied()
        .max()
        .unwrap_or(0);
    for layer in (0..=top).rev() {
        let a = old_at.remove(&layer).unwrap_or_default();
        let b = new_at.remove(&layer).unwrap_or_default();
        let sides = [
            (
                a.difference(&b),
                &mut old_leaves,
                &mut old_at,
                &mut out.removed_nodes,
            ),
            (
                b.difference(&a),
                &mut new_leaves,
                &mut new_at,
                &mut out.new_nodes,
            ),
        ];
        for (only, leaves, next, nodes) in sides {
            for cid in only {
                nodes.insert(*cid);
                let node = fetch_node(store, cid)?;
                for item in node.items {
                    match item {
                        Item::Leaf { key, value } => {
                            leaves.insert(key, value);
                        }
                        Item::Tree(link) => {
                            let c = match link {
                                Link::Stored(c) => c,
                                Link::Loaded(n) => node_cid(&n)?,
                            };
                            if layer == 0 {
                                return Err(MstError::BadNode {
                                    cid: *cid,
                                    reason: "subtree below layer 0",
                                });
                            }
                            next.entry(layer - 1).or_default().insert(c);
                        }
                    }
                }
            }
        }
    }
    for (key, new_v) in &new_leaves {
        match old_leaves.remove(key) {
            None => out.adds.push((key.clone(), *new_v)),
            Some(old_v) if old_v != *new_v => out.updates.push((key.clone(), old_v, *new_v)),
            Some(_) => {}
        }
    }
    out.deletes = old_leaves.into_iter().collect();
    Ok(out)
}
