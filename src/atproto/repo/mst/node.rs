//! MST node wire format (`{l, e: [{p, k, v, t}]}`) and the in-memory node shape.

use super::super::blockstore::Blockstore;
use super::super::cid::{cid_for_dag_cbor, Cid};
use super::super::dagcbor;
use super::{validate_key, MstError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Layer of a key: leading zero bits of sha256(key) divided by two (fanout 4).
pub fn key_height(key: &[u8]) -> u32 {
    let digest = Sha256::digest(key);
    let mut zeros = 0;
    for b in digest.iter() {
        if *b == 0 {
            zeros += 8;
            continue;
        }
        zeros += b.leading_zeros();
        break;
    }
    zeros / 2
}

/// Length in bytes of the common prefix of two keys (prefix compression unit).
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[derive(Serialize, Deserialize)]
struct EntryData {
    p: usize,
    #[serde(with = "serde_bytes")]
    k: Vec<u8>,
    v: Cid,
    t: Option<Cid>,
}

#[derive(Serialize, Deserialize)]
struct NodeData {
    l: Option<Cid>,
    e: Vec<EntryData>,
}

/// A pointer to a child node: either only its CID (not read yet) or the decoded node.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    Stored(Cid),
    Loaded(Box<Node>),
}

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Leaf { key: String, value: Cid },
    Tree(Link),
}

/// In-memory node: leaves and subtrees in key order, never two subtrees adjacent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub items: Vec<Item>,
    /// CID of the encoded node; `None` while the node (or anything below it) changed.
    pub cid: Option<Cid>,
}

impl Node {
    /// Index of the first leaf whose key is >= `key` (items.len() if none).
    pub fn lower_bound(&self, key: &str) -> usize {
        self.items
            .iter()
            .position(|it| matches!(it, Item::Leaf { key: k, .. } if k.as_str() >= key))
            .unwrap_or(self.items.len())
    }

    pub fn first_leaf_key(&self) -> Option<&str> {
        self.items.iter().find_map(|it| match it {
            Item::Leaf { key, .. } => Some(key.as_str()),
            Item::Tree(_) => None,
        })
    }

    pub fn decode(cid: Cid, bytes: &[u8]) -> Result<Node, MstError> {
        let bad = |reason| MstError::BadNode { cid, reason };
        let data: NodeData = dagcbor::decode(bytes)?;
        let mut items = Vec::with_capacity(data.e.len() * 2 + 1);
        if let Some(l) = data.l {
            items.push(Item::Tree(Link::Stored(l)));
        }
        let mut prev: Vec<u8> = Vec::new();
        for e in data.e {
            if e.p > prev.len() {
                return Err(bad("prefix longer than previous key"));
            }
            let mut key = prev[..e.p].to_vec();
            key.extend_from_slice(&e.k);
            if !prev.is_empty() && key <= prev {
                return Err(bad("keys not strictly increasing"));
            }
            let key_str = String::from_utf8(key.clone()).map_err(|_| bad("key is not UTF-8"))?;
            validate_key(&key_str).map_err(|_| bad("invalid key"))?;
            items.push(Item::Leaf {
                key: key_str,
                value: e.v,
            });
            if let Some(t) = e.t {
                items.push(Item::Tree(Link::Stored(t)));
            }
            prev = key;
        }
        Ok(Node {
            items,
            cid: Some(cid),
        })
    }

    /// Encodes this node given the CIDs of its subtrees (in item order).
    pub fn encode_with(
        &self,
        mut child_cid: impl FnMut(&Link) -> Result<Cid, MstError>,
    ) -> Result<Vec<u8>, MstError> {
        let mut l = None;
        let mut entries: Vec<EntryData> = Vec::new();
        let mut prev: &[u8] = &[];
        for item in &self.items {
            match item {
                Item::Tree(link) => {
                    let c = child_cid(link)?;
                    match entries.last_mut() {
                        Some(last) => last.t = Some(c),
                        None => l = Some(c),
                    }
                }
                Item::Leaf { key, value } => {
                    let kb = key.as_bytes();
                    let p = common_prefix_len(prev, kb);
                    entries.push(EntryData {
                        p,
                        k: kb[p..].to_vec(),
                        v: *value,
                        t: None,
                    });
                    prev = kb;
                }
            }
        }
        Ok(dagcbor::encode(&NodeData { l, e: entries })?)
    }
}

/// Fetches and decodes a node, checking the block's hash.
pub(crate) fn fetch_node(store: &dyn Blockstore, cid: &Cid) -> Result<Node, MstError> {
    let bytes = store.get(cid)?.ok_or(MstError::MissingBlock(*cid))?;
    if cid_for_dag_cbor(&bytes) != *cid {
        return Err(MstError::BadNode {
            cid: *cid,
            reason: "block does not hash to its CID",
        });
    }
    Node::decode(*cid, &bytes)
}

/// Layer of a node: from its first leaf, or one above its leftmost child for a leafless
/// node (those only bridge layer gaps). Iterative and bounded: sha256 has at most 128 layers.
pub(crate) fn node_layer(store: &dyn Blockstore, node: &Node) -> Result<u32, MstError> {
    use std::borrow::Cow;
    let mut cur: Cow<'_, Node> = Cow::Borrowed(node);
    let mut above = 0u32;
    loop {
        if let Some(k) = cur.first_leaf_key() {
            return Ok(key_height(k.as_bytes()) + above);
        }
        let next: Cow<'_, Node> = match (&cur, cur.items.first()) {
            (_, None) | (_, Some(Item::Leaf { .. })) => return Ok(above),
            (_, Some(Item::Tree(Link::Stored(c)))) => Cow::Owned(fetch_node(store, c)?),
            (Cow::Borrowed(n), Some(Item::Tree(Link::Loaded(_)))) => match n.items.first() {
                Some(Item::Tree(Link::Loaded(child))) => Cow::Borrowed(&**child),
                _ => return Ok(above),
            },
            // A decoded node only holds Stored links.
            (Cow::Owned(_), Some(Item::Tree(Link::Loaded(child)))) => Cow::Owned((**child).clone()),
        };
        above += 1;
        if above > 128 {
            return Err(MstError::BadNode {
                cid: cur.cid.unwrap_or_default(),
                reason: "chain of leafless nodes deeper than any key height",
            });
        }
        cur = next;
    }
}
