//! Model tests: random sequences of inserts and removes on the subscription trie and the
//! retained-message tree, checked against plain collections searched with `filter_matches`.
//! The alphabet is tiny on purpose (empty levels, `$SYS`, two names, the wildcards), so that
//! random filters and topics overlap, share prefixes, and hit every matching rule often.

use proptest::prelude::*;
use std::collections::HashMap;
use surgemq::topic::{
    filter_matches, validate_filter, validate_topic_name, SubscriptionTrie, TopicTree,
};

const FILTER_LEVELS: &[&str] = &["", "$SYS", "a", "b", "+"];
const TOPIC_LEVELS: &[&str] = &["", "$SYS", "a", "b", "c"];

fn filter() -> impl Strategy<Value = String> {
    let levels = prop::collection::vec(prop::sample::select(FILTER_LEVELS), 0..4);
    (levels, any::<bool>())
        .prop_map(|(mut levels, multi)| {
            if multi {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("a filter is never empty", |f| !f.is_empty())
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOPIC_LEVELS), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic name is never empty", |t| !t.is_empty())
}

#[derive(Debug, Clone)]
enum Op {
    /// Insert (index into the pool, modulo its length; key). The value is the op's position
    /// in the sequence, so every inserted value is unique.
    Insert(usize, u8),
    Remove(usize, u8),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0..64usize, 0..3u8).prop_map(|(i, k)| Op::Insert(i, k)),
        2 => (0..64usize, 0..3u8).prop_map(|(i, k)| Op::Remove(i, k)),
    ];
    prop::collection::vec(op, 0..80)
}

type Entry = (String, u8, u32);

fn trie_matches(trie: &SubscriptionTrie<u8, (String, u32)>, topic: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    trie.for_each_match(topic, |k, (f, v)| out.push((f.clone(), *k, *v)));
    out.sort();
    out
}

fn model_matches(model: &[Entry], topic: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = model
        .iter()
        .filter(|(f, _, _)| filter_matches(f, topic))
        .cloned()
        .collect();
    out.sort();
    out
}

proptest! {
    #[test]
    fn trie_agrees_with_filter_matches(
        pool in prop::collection::vec(filter(), 1..8),
        ops in ops(),
        topics in prop::collection::vec(topic(), 1..12),
    ) {
        for f in &pool {
            prop_assert_eq!(validate_filter(f), Ok(()), "generated filter {:?}", f);
        }
        for t in &topics {
            prop_assert_eq!(validate_topic_name(t), Ok(()), "generated topic {:?}", t);
        }
        let mut trie = SubscriptionTrie::new();
        let mut model: Vec<Entry> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Insert(i, key) => {
                    let f = &pool[i % pool.len()];
                    let value = n as u32;
                    let want = match model.iter_mut().find(|(mf, mk, _)| mf == f && *mk == key) {
                        Some(e) => Some(std::mem::replace(&mut e.2, value)),
                        None => {
                            model.push((f.clone(), key, value));
                            None
                        }
                    };
                    let got = trie.insert(f, key, (f.clone(), value)).map(|(_, v)| v);
                    prop_assert_eq!(got, want, "insert {:?} {}", f, key);
                }
                Op::Remove(i, key) => {
                    let f = &pool[i % pool.len()];
                    let want = model
                        .iter()
                        .position(|(mf, mk, _)| mf == f && *mk == key)
                        .map(|at| model.swap_remove(at).2);
                    let got = trie.remove(f, &key).map(|(_, v)| v);
                    prop_assert_eq!(got, want, "remove {:?} {}", f, key);
                }
            }
            prop_assert_eq!(trie.len(), model.len());
            for t in &topics {
                prop_assert_eq!(trie_matches(&trie, t), model_matches(&model, t), "topic {:?}", t);
            }
        }
        let mut distinct: Vec<&String> = model.iter().map(|(f, _, _)| f).collect();
        distinct.sort();
        distinct.dedup();
        prop_assert_eq!(trie.filter_count(), distinct.len());
        for f in &pool {
            for key in 0..3u8 {
                let want = model.iter().find(|(mf, mk, _)| mf == f && *mk == key).map(|e| e.2);
                prop_assert_eq!(trie.get(f, &key).map(|(_, v)| *v), want);
            }
        }
        // Emptying the trie must leave nothing behind but the root.
        for (f, key, value) in std::mem::take(&mut model) {
            prop_assert_eq!(trie.remove(&f, &key), Some((f.clone(), value)));
        }
        prop_assert_eq!((trie.len(), trie.filter_count(), trie.node_count()), (0, 0, 1));
    }

    #[test]
    fn tree_agrees_with_filter_matches(
        pool in prop::collection::vec(topic(), 1..10),
        ops in ops(),
        filters in prop::collection::vec(filter(), 1..12),
    ) {
        let mut tree = TopicTree::new();
        let mut model: HashMap<String, u32> = HashMap::new();
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Insert(i, _) => {
                    let t = &pool[i % pool.len()];
                    let want = model.insert(t.clone(), n as u32);
                    let got = tree.insert(t, (t.clone(), n as u32)).map(|(_, v)| v);
                    prop_assert_eq!(got, want, "insert {:?}", t);
                }
                Op::Remove(i, _) => {
                    let t = &pool[i % pool.len()];
                    let got = tree.remove(t).map(|(_, v)| v);
                    prop_assert_eq!(got, model.remove(t), "remove {:?}", t);
                }
            }
            prop_assert_eq!(tree.len(), model.len());
        }
        for t in &pool {
            prop_assert_eq!(tree.get(t).map(|(_, v)| *v), model.get(t).copied());
        }
        for f in &filters {
            let mut got = Vec::new();
            tree.for_each_matching(f, |(t, v)| got.push((t.clone(), *v)));
            got.sort();
            let mut want: Vec<(String, u32)> = model
                .iter()
                .filter(|(t, _)| filter_matches(f, t))
                .map(|(t, v)| (t.clone(), *v))
                .collect();
            want.sort();
            prop_assert_eq!(got, want, "filter {:?}", f);
        }
        for t in model.keys() {
            prop_assert!(tree.remove(t).is_some());
        }
        prop_assert_eq!((tree.len(), tree.node_count()), (0, 1));
    }
}
