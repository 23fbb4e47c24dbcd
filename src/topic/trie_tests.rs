//! Unit tests of the subscription trie, kept in their own file so `trie.rs` stays readable.
//! The randomized model test against `filter_matches` is in `tests/topic_trie_prop.rs`.

use super::SubscriptionTrie;
use crate::topic::filter_matches;

/// The sorted (key, value) pairs `for_each_match` reports for `topic`.
fn matches<K: Ord + Clone + std::hash::Hash, V: Ord + Clone>(
    trie: &SubscriptionTrie<K, V>,
    topic: &str,
) -> Vec<(K, V)> {
    let mut out = Vec::new();
    trie.for_each_match(topic, |k, v| out.push((k.clone(), v.clone())));
    out.sort();
    out
}

#[test]
fn insert_replace_get_remove_len() {
    let mut t = SubscriptionTrie::new();
    assert!(t.is_empty());
    assert_eq!(t.insert("a/b", "c1", 0u8), None);
    assert_eq!(t.insert("a/b", "c2", 1), None);
    assert_eq!(t.insert("a/#", "c1", 2), None);
    assert_eq!(t.insert("a/+", "c1", 1), None);
    assert_eq!((t.len(), t.filter_count()), (4, 3));
    // Same (filter, key): replaced, not added.
    assert_eq!(t.insert("a/b", "c1", 2), Some(0));
    assert_eq!((t.len(), t.filter_count()), (4, 3));
    assert_eq!(t.get("a/b", &"c1"), Some(&2));
    assert_eq!(t.get("a/b", &"c2"), Some(&1));
    assert_eq!(t.get("a/#", &"c1"), Some(&2));
    assert_eq!(t.get("a/+", &"c1"), Some(&1));
    assert_eq!(t.get("a/+", &"c2"), None);
    assert_eq!(t.get("a", &"c1"), None);
    assert_eq!(t.get("a/b/c", &"c1"), None);
    assert_eq!(t.get("#", &"c1"), None);

    // Removing what is not there changes nothing: an unknown key, an unknown filter, and a
    // filter whose node exists only as an ancestor of others.
    assert_eq!(t.remove("a/b", &"c3"), None);
    assert_eq!(t.remove("x/y", &"c1"), None);
    assert_eq!(t.remove("a", &"c1"), None);
    assert_eq!(t.remove("a/+/#", &"c1"), None);
    assert_eq!((t.len(), t.filter_count(), t.node_count()), (4, 3, 4));

    assert_eq!(t.remove("a/b", &"c1"), Some(2));
    assert_eq!(t.remove("a/b", &"c1"), None);
    assert_eq!((t.len(), t.filter_count()), (3, 3));
    assert_eq!(t.remove("a/b", &"c2"), Some(1));
    assert_eq!((t.len(), t.filter_count()), (2, 2));
    assert_eq!(t.remove("a/#", &"c1"), Some(2));
    assert_eq!(t.remove("a/+", &"c1"), Some(1));
    assert!(t.is_empty());
    assert_eq!((t.len(), t.filter_count(), t.node_count()), (0, 0, 1));
}

#[test]
fn matching_table() {
    let filters = [
        "a", "a/b", "a/+", "a/#", "+", "+/+", "#", "+/b", "a//b", "/a", "a/", "/#", "/+", "+/#",
        "$SYS/#", "$SYS/+", "$SYS", "+/$SYS", "a/b/c", "a/+/c", "a/b/#",
    ];
    let mut t = SubscriptionTrie::new();
    for (i, f) in filters.iter().enumerate() {
        t.insert(f, i, *f);
    }
    let expect = |topic: &str, want: &[&str]| {
        let mut got: Vec<&str> = matches(&t, topic).into_iter().map(|(_, f)| f).collect();
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want, "topic {topic:?}");
        let mut oracle: Vec<&str> = filters
            .iter()
            .copied()
            .filter(|f| filter_matches(f, topic))
            .collect();
        oracle.sort();
        assert_eq!(got, oracle, "oracle disagrees on {topic:?}");
    };
    expect("a", &["a", "a/#", "+", "#", "+/#"]);
    expect(
        "a/b",
        &["a/b", "a/+", "a/#", "+/+", "#", "+/b", "+/#", "a/b/#"],
    );
    expect("a/", &["a/+", "a/#", "+/+", "#", "a/", "+/#"]);
    expect("a//b", &["a/#", "#", "a//b", "+/#"]);
    expect("/a", &["+/+", "#", "/a", "/#", "/+", "+/#"]);
    expect("/", &["+/+", "#", "/#", "/+", "+/#"]);
    expect("a/b/c", &["a/#", "#", "+/#", "a/b/c", "a/+/c", "a/b/#"]);
    expect("a/x/c", &["a/#", "#", "+/#", "a/+/c"]);
    expect("b", &["+", "#", "+/#"]);
    expect("b/$SYS", &["+/+", "#", "+/#", "+/$SYS"]);
    expect("$SYS", &["$SYS/#", "$SYS"]);
    expect("$SYS/x", &["$SYS/#", "$SYS/+"]);
    expect("$SYS/x/y", &["$SYS/#"]);
    expect("$other/x", &[]);
    expect("zz/y/x/w", &["#", "+/#"]);
}

#[test]
fn overlapping_filters_report_a_key_once_per_filter() {
    let mut t = SubscriptionTrie::new();
    t.insert("s/+/t", 7u32, 1u8);
    t.insert("s/#", 7, 2);
    t.insert("s/1/t", 8, 0);
    assert_eq!(matches(&t, "s/1/t"), vec![(7, 1), (7, 2), (8, 0)]);
    assert_eq!(matches(&t, "s/2/t"), vec![(7, 1), (7, 2)]);
    assert_eq!(matches(&t, "s"), vec![(7, 2)]);
    assert_eq!(matches(&t, "x/1/t"), vec![]);
}

#[test]
fn dollar_topics_are_hidden_from_leading_wildcards() {
    let mut t = SubscriptionTrie::new();
    t.insert("#", 1u8, ());
    t.insert("+", 2, ());
    t.insert("+/x", 3, ());
    t.insert("+/#", 4, ());
    assert_eq!(matches(&t, "$SYS"), vec![]);
    assert_eq!(matches(&t, "$SYS/x"), vec![]);
    assert_eq!(matches(&t, "SYS/x"), vec![(1, ()), (3, ()), (4, ())]);
    t.insert("$SYS/#", 5, ());
    t.insert("$SYS/+", 6, ());
    assert_eq!(matches(&t, "$SYS"), vec![(5, ())]);
    assert_eq!(matches(&t, "$SYS/x"), vec![(5, ()), (6, ())]);
    // Only the first level's first character counts.
    assert_eq!(matches(&t, "a/$x"), vec![(1, ()), (4, ())]);
}

#[test]
fn removal_prunes_empty_branches() {
    let mut t = SubscriptionTrie::new();
    assert_eq!(t.node_count(), 1);
    t.insert("a/b/c/d", 1u8, ());
    assert_eq!(t.node_count(), 5);
    t.insert("a/b", 1, ());
    t.insert("a/+/c", 1, ());
    // `#` has no node of its own: it lives on `a/b`.
    t.insert("a/b/#", 1, ());
    t.insert("#", 1, ());
    assert_eq!(t.node_count(), 7);

    // Removing the deep filter cuts `c/d` but keeps `a/b`, which still has entries.
    assert_eq!(t.remove("a/b/c/d", &1), Some(()));
    assert_eq!(t.node_count(), 5);
    assert_eq!(t.remove("a/b", &1), Some(()));
    assert_eq!(t.node_count(), 5, "a/b still holds a/b/#");
    assert_eq!(t.remove("a/b/#", &1), Some(()));
    assert_eq!(t.node_count(), 4, "a/b went, a stays for a/+/c");
    assert_eq!(t.remove("a/+/c", &1), Some(()));
    assert_eq!(t.node_count(), 1);
    assert_eq!(t.remove("#", &1), Some(()));
    assert_eq!((t.len(), t.filter_count(), t.node_count()), (0, 0, 1));

    // Many overlapping filters and keys, removed in an order unrelated to insertion.
    let levels = ["", "a", "b", "+", "$SYS"];
    let mut filters = Vec::new();
    for x in levels {
        filters.push(x.to_string() + "/#");
        for y in levels {
            filters.push(format!("{x}/{y}"));
            filters.push(format!("{x}/{y}/#"));
        }
    }
    filters.push("#".into());
    let mut t = SubscriptionTrie::new();
    for (i, f) in filters.iter().enumerate() {
        for key in 0..3u8 {
            t.insert(f, key, i);
        }
    }
    assert_eq!(t.len(), filters.len() * 3);
    assert_eq!(t.filter_count(), filters.len());
    for key in [1u8, 0, 2] {
        for f in filters.iter().rev() {
            assert!(t.remove(f, &key).is_some(), "{f:?} {key}");
        }
    }
    assert_eq!((t.len(), t.filter_count(), t.node_count()), (0, 0, 1));
}

/// Tiny deterministic generator so the test needs no extra dependency.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn fan_out_of_100k_subscribers_on_one_filter() {
    // A complexity guard: with a linear scan per insert or remove this takes minutes.
    const N: u32 = 100_000;
    let mut t = SubscriptionTrie::new();
    for k in 0..N {
        assert_eq!(t.insert("news/all", k, k ^ 0x5555), None);
    }
    t.insert("news/+", 0, 1);
    assert_eq!((t.len(), t.filter_count()), (N as usize + 1, 2));
    assert_eq!(t.insert("news/all", 12_345, 7), Some(12_345 ^ 0x5555));
    assert_eq!(t.insert("news/all", 12_345, 12_345 ^ 0x5555), Some(7));

    let mut count = 0u64;
    let mut sum = 0u64;
    t.for_each_match("news/all", |k, v| {
        count += 1;
        sum += u64::from(*k ^ *v);
    });
    assert_eq!(count, u64::from(N) + 1);
    assert_eq!(sum, u64::from(N) * 0x5555 + 1);

    let mut order: Vec<u32> = (0..N).collect();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..order.len()).rev() {
        order.swap(i, (xorshift(&mut rng) % (i as u64 + 1)) as usize);
    }
    for (n, k) in order.iter().enumerate() {
        assert_eq!(t.remove("news/all", k), Some(k ^ 0x5555));
        if n % 9973 == 0 {
            // The entries still present are all still found.
            for other in order[n + 1..].iter().take(50) {
                assert_eq!(t.get("news/all", other), Some(&(other ^ 0x5555)));
            }
        }
    }
    assert_eq!((t.len(), t.filter_count(), t.node_count()), (1, 1, 3));
    assert_eq!(matches(&t, "news/all"), vec![(0, 1)]);
}

/// Runs `f` on a thread with a 128 KiB stack, so that any recursion over a topic's depth
/// fails in this test rather than on an executor thread in production.
fn on_a_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn deepest_valid_filters_do_not_overflow_the_stack() {
    on_a_small_stack(|| {
        // 65,535 '/' is a valid filter of 65,536 empty levels, the deepest there is; the
        // deepest `#` filter has 65,535 levels and the deepest all-`+` filter 32,768.
        let deepest = "/".repeat(65_535);
        let deepest_multi = "/".repeat(65_534) + "#";
        let pluses = "+/".repeat(32_767) + "+";
        assert!([&deepest, &deepest_multi, &pluses]
            .iter()
            .all(|f| f.len() == 65_535 && crate::topic::validate_filter(f).is_ok()));
        let mut t = SubscriptionTrie::new();
        t.insert(&deepest, 1u8, ());
        t.insert(&deepest_multi, 2, ());
        t.insert(&pluses, 3, ());
        t.insert("#", 4, ());
        // The root, 65,536 empty levels (the `#` filter's node is on that path), 32,768 `+`.
        assert_eq!(t.node_count(), 1 + 65_536 + 32_768);
        assert_eq!(t.get(&deepest, &1), Some(&()));
        assert_eq!(matches(&t, &deepest), vec![(1, ()), (2, ()), (4, ())]);
        assert_eq!(matches(&t, &"/".repeat(32_767)), vec![(3, ()), (4, ())]);
        // 32,768 levels match the `+` filter, 32,769 do not.
        assert_eq!(matches(&t, &"a/".repeat(32_767)), vec![(3, ()), (4, ())]);
        assert_eq!(matches(&t, &"a/".repeat(32_768)), vec![(4, ())]);
        assert_eq!(t.remove(&deepest, &1), Some(()));
        // The `#` filter's node, 65,534 empty levels down, keeps its path.
        assert_eq!(t.node_count(), 1 + 65_534 + 32_768);
        assert_eq!(t.remove(&pluses, &3), Some(()));
        assert_eq!(t.remove(&deepest_multi, &2), Some(()));
        assert_eq!(t.remove("#", &4), Some(()));
        assert_eq!((t.len(), t.node_count()), (0, 1));
        // And dropping a deep trie.
        t.insert(&deepest, 1u8, ());
        t.insert(&pluses, 3, ());
        drop(t);
    });
}

#[test]
fn deepest_valid_filter_does_not_overflow_the_stack() {
    // 32,768 non-empty levels: the deepest filter whose levels all have a name.
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(|| {
            let deep = "a/".repeat(32_767) + "a";
            let deep_multi = "a/".repeat(32_767) + "#";
            let mut t = SubscriptionTrie::new();
            t.insert(&deep, 1u8, ());
            t.insert(&deep_multi, 2, ());
            assert_eq!(t.node_count(), 32_769);
            assert_eq!(matches(&t, &deep), vec![(1, ()), (2, ())]);
            assert_eq!(t.remove(&deep, &1), Some(()));
            assert_eq!(t.node_count(), 32_768);
            assert_eq!(t.remove(&deep_multi, &2), Some(()));
            assert_eq!(t.node_count(), 1);
            // And dropping a deep trie.
            t.insert(&deep, 1u8, ());
            drop(t);
        })
        .unwrap()
        .join()
        .unwrap();
}
