//! End-to-end tests of the `wander` binary on tiny hand-made fixtures.

mod util;

use util::{fixtures, http, json, run, sizes, start_server, stderr, wander};

fn ingest(
    case: &std::path::Path,
    run_dir: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut cmd = wander(case);
    cmd.args(["--json", "--set"])
        .arg(format!("run.dir=\"{}\"", run_dir.display()));
    for e in extra {
        cmd.arg(e);
    }
    cmd.arg("ingest");
    run(&mut cmd)
}

#[test]
fn ingest_ml100k_layout_counts_and_positives() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ingest(&fixtures().join("ml100k-tiny"), tmp.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["users"], 4);
    assert_eq!(s["items"], 5);
    assert_eq!(s["interactions"], 20);
    // rating = (u*i) % 5 + 1 >= 4  <=>  (u*i) % 5 in {3, 4}
    let expected = (1..5)
        .flat_map(|u| (1..6).map(move |i| (u * i) % 5 + 1))
        .filter(|r| *r >= 4)
        .count();
    assert_eq!(s["positives"], expected);
    assert_eq!(s["skipped"], false);
    for f in [
        "interactions.parquet",
        "items.parquet",
        "users.parquet",
        "manifest.json",
    ] {
        assert!(tmp.path().join("ingest").join(f).is_file(), "{f}");
    }
    // Same inputs and config: the stage is skipped; --force redoes it.
    assert_eq!(
        json(&ingest(&fixtures().join("ml100k-tiny"), tmp.path(), &[]))["skipped"],
        true
    );
    let mut cmd = wander(&fixtures().join("ml100k-tiny"));
    cmd.args(["--json", "--set"])
        .arg(format!("run.dir=\"{}\"", tmp.path().display()))
        .args(["ingest", "--force"]);
    assert_eq!(json(&run(&mut cmd))["skipped"], false);
    // A changed config key reruns it.
    let s = json(&ingest(
        &fixtures().join("ml100k-tiny"),
        tmp.path(),
        &["--set", "data.positive=rating >= 5"],
    ));
    assert_eq!(s["skipped"], false);
    assert_eq!(s["positives"], 20 / 5);
}

#[test]
fn ingest_latest_small_layout_with_tags_and_quotes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ingest(&fixtures().join("latest-tiny"), tmp.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(sizes(&s), (2, 3, 5));
    assert_eq!(s["positives"], 3);
}

#[test]
fn ingest_generic_layout_with_watch_ratio() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ingest(&fixtures().join("generic-tiny"), tmp.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["users"], 3);
    assert_eq!(s["positives"], 3);
    assert_eq!(
        s["feedback_columns"],
        serde_json::json!(["watch_ratio", "liked"])
    );
}

#[test]
fn every_broken_input_gets_a_clear_error_and_no_panic() {
    let broken = fixtures().join("broken");
    let mut cases: Vec<_> = std::fs::read_dir(&broken)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10);
    for case in cases {
        let tmp = tempfile::tempdir().unwrap();
        let out = ingest(&case, tmp.path(), &[]);
        let err = stderr(&out);
        let expect = std::fs::read_to_string(case.join("expect.txt")).unwrap();
        assert!(!out.status.success(), "{}: should fail", case.display());
        assert!(
            err.contains(expect.trim()),
            "{}: expected `{}` in:\n{err}",
            case.display(),
            expect.trim()
        );
        assert!(
            out.stdout.is_empty(),
            "{}: nothing on stdout on failure",
            case.display()
        );
    }
}

#[test]
fn skip_mode_counts_bad_rows() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["bad-number", "unknown-item", "truncated", "bad-timestamp"] {
        let out = ingest(
            &fixtures().join("broken").join(case),
            tmp.path(),
            &["--set", "data.on_error=skip"],
        );
        assert!(out.status.success(), "{case}: {}", stderr(&out));
        let s = json(&out);
        assert_eq!(s["skipped_rows"], 1, "{case}");
        assert_eq!(
            s["interactions"].as_u64().unwrap() + 1,
            if case == "truncated" { 4 } else { 20 },
            "{case}"
        );
    }
}

#[test]
fn failed_stage_leaves_earlier_artifacts_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let good = ingest(&fixtures().join("ml100k-tiny"), tmp.path(), &[]);
    assert!(good.status.success());
    let before: Vec<(String, Vec<u8>)> = std::fs::read_dir(tmp.path().join("ingest"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    let bad = ingest(&fixtures().join("broken/bad-number"), tmp.path(), &[]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("earlier artifacts in the run directory are unchanged"));
    for (name, bytes) in &before {
        assert_eq!(
            &std::fs::read(tmp.path().join("ingest").join(name)).unwrap(),
            bytes,
            "{name} changed"
        );
    }
    let entries = std::fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(entries, 1, "no partial folders left behind");
}

#[test]
fn corrupted_artifact_is_detected_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(ingest(&fixtures().join("ml100k-tiny"), tmp.path(), &[])
        .status
        .success());
    let p = tmp.path().join("ingest/interactions.parquet");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let out = ingest(&fixtures().join("ml100k-tiny"), tmp.path(), &[]);
    assert!(out.status.success());
    assert_eq!(
        json(&out)["skipped"],
        false,
        "a truncated artifact must not count as up to date"
    );
    assert_eq!(std::fs::read(&p).unwrap(), bytes, "rebuilt byte-identical");
}

/// The configuration the Kubernetes examples mount (deploy/k8s/storage.yaml's ConfigMap) is
/// one that wander accepts, with the values the other manifests rely on.
#[test]
fn the_kubernetes_example_configuration_loads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let yaml = std::fs::read_to_string(root.join("deploy/k8s/storage.yaml")).unwrap();
    let start = yaml
        .find("wander.toml: |")
        .expect("the ConfigMap's wander.toml")
        + 14;
    let toml: String = yaml[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("k8s.toml");
    std::fs::write(&file, &toml).unwrap();
    let out = run(wander(tmp.path())
        .arg("--config")
        .arg(&file)
        .args(["--json", "config", "show"]));
    assert!(out.status.success(), "{toml}\n{}", stderr(&out));
    let config = json(&out);
    assert_eq!(config["run"]["dir"], "/data/runs/default");
    assert_eq!(config["serve"]["bind"], "0.0.0.0:8080");
    assert!(
        config["serve"]["drain_seconds"].as_u64().unwrap() < 30,
        "below the grace period"
    );
    assert_eq!(
        config["engine"]["url"],
        "ballista://ballista-scheduler:50050"
    );
}

#[test]
fn config_show_unknown_keys_and_env_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(wander(tmp.path()).args(["config", "show"]));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for section in ["[run]", "[assets]", "[data]", "[llm.lora]"] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    let out = run(wander(tmp.path())
        .env("WANDER__RUN__SEED", "99")
        .args(["--json", "config", "show"]));
    assert_eq!(json(&out)["run"]["seed"], 99);
    std::fs::write(
        tmp.path().join("wander.toml"),
        "[data]\nformt = \"recbole\"\n",
    )
    .unwrap();
    let out = run(wander(tmp.path()).args(["config", "show"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("data.formt") && err.contains("unknown key"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
}

#[test]
fn quick_profile_is_a_marked_smoke_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(wander(tmp.path()).args(["--json", "run", "--profile", "quick", "--help"]));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for stage in [
        "train alignment",
        "precompute",
        "simulate",
        "report",
        "serve check",
    ] {
        assert!(
            help.contains(stage),
            "`wander run --help` omits {stage}:\n{help}"
        );
    }
    let out = run(wander(tmp.path()).args(["--profile", "quick", "--json", "config", "show"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let c = json(&out);
    assert_eq!(c["run"]["smoke"], true);
    assert_eq!(c["run"]["dir"], "runs/quick");
    assert_eq!(c["taxonomy"]["fine_clusters"], 16);
    let out = run(wander(tmp.path()).env("WANDER_PROFILE", "quick").args([
        "--set",
        "taxonomy.fine_clusters=20",
        "--json",
        "config",
        "show",
    ]));
    assert_eq!(
        json(&out)["taxonomy"]["fine_clusters"],
        20,
        "--set wins over the profile"
    );
    let out = run(wander(tmp.path()).args(["--profile", "fast", "config", "show"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("`fast`") && err.contains("quick"), "{err}");
}

/// Copies a stage folder (files only, as stages write them).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The embedded default on the real MovieLens-100K (fetched from the recbole wheel by
/// wander's own asset code into the repository's cache).
#[test]
fn ingest_default_movielens_100k() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.wander/assets");
    let mut cmd = wander(tmp.path());
    cmd.args(["--json", "--set"])
        .arg(format!("run.dir=\"{}\"", tmp.path().join("run").display()));
    cmd.arg("--set")
        .arg(format!("assets.cache_dir=\"{}\"", cache.display()))
        .arg("ingest");
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(sizes(&s), (943, 1682, 100_000));
    assert_eq!(s["positives"], 55_375, "ratings >= 4 in MovieLens-100K");
    assert_eq!(s["skipped_rows"], 0);
}

/// The taxonomy stage on the real MovieLens-100K and all-MiniLM-L6-v2: unique fine
/// descriptions, coherence well above a random assignment, byte-identical reruns.
#[test]
fn taxonomy_on_movielens_is_coherent_unique_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.wander/assets");
    let base = |cmd: &mut std::process::Command| {
        cmd.args(["--json", "--set"])
            .arg(format!("run.dir=\"{}\"", tmp.path().join("run").display()));
        cmd.arg("--set")
            .arg(format!("assets.cache_dir=\"{}\"", cache.display()));
        cmd.arg("--set").arg(format!(
            "taxonomy.cache_dir=\"{}\"",
            tmp.path().join("cache").display()
        ));
    };
    let mut ingest = wander(tmp.path());
    base(&mut ingest);
    assert!(run(ingest.arg("ingest")).status.success());
    let mut tax = wander(tmp.path());
    base(&mut tax);
    let out = run(tax.arg("taxonomy"));
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["fine_clusters"], 64);
    assert_eq!(s["descriptions_unique"], true);
    let (c, r) = (
        s["coherence_mixed"].as_f64().unwrap(),
        s["coherence_mixed_random"].as_f64().unwrap(),
    );
    assert!(c >= 1.5 * r, "coherence {c} vs random {r}");
    assert!(s["genre_purity"].as_f64().unwrap() > s["genre_purity_random"].as_f64().unwrap());
    assert_eq!(s["embedded_items"], 1682);
    // Whether descriptions name their clusters, by scheme; how much clusters sort by era
    // and popularity; the mix compared at five weights.
    for scheme in ["tfidf", "facets", "exemplars", "discriminative"] {
        for key in ["description_retrieval", "description_retrieval_held_out"] {
            let a = s[key][scheme]["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&a), "{key} {scheme}: {a}");
        }
    }
    // Titles chosen to tell clusters apart name them better than the most central ones, on
    // items the descriptions never saw too.
    let held_out = |scheme: &str| {
        s["description_retrieval_held_out"][scheme]["accuracy"]
            .as_f64()
            .unwrap()
    };
    assert!(
        held_out("discriminative") > held_out("exemplars"),
        "held-out retrieval: discriminative {} vs exemplars {}",
        held_out("discriminative"),
        held_out("exemplars")
    );
    assert!(s["era_share"].as_f64().unwrap() > s["era_share_random"].as_f64().unwrap());
    assert_eq!(s["mix_comparison"].as_object().unwrap().len(), 5);
    let files = ["clusters.json", "item_clusters.parquet", "report.md"];
    let first: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(tmp.path().join("run/taxonomy").join(f)).unwrap())
        .collect();
    let mut again = wander(tmp.path());
    base(&mut again);
    let out = run(again.args(["taxonomy", "--force"]));
    assert!(out.status.success());
    assert_eq!(
        json(&out)["embedding_cache_hits"],
        1682,
        "the rerun reuses cached embeddings"
    );
    for (f, bytes) in files.iter().zip(&first) {
        assert_eq!(
            &std::fs::read(tmp.path().join("run/taxonomy").join(f)).unwrap(),
            bytes,
            "{f} differs between runs with the same seed"
        );
    }
    refresh_checks(tmp.path(), &base, &first[..2]);
    #[cfg(feature = "engine")]
    aggregate_checks(tmp.path(), &base);
}

/// `wander refresh` on a newer window written here: the real MovieLens-100K catalogue plus
/// three invented films, 40 known users and one new one rating in the month after the log.
/// New items are placed in existing clusters, the built taxonomy stays byte-identical, and
/// text-only placement of held-out items beats naming the most common cluster.
fn refresh_checks(
    dir: &std::path::Path,
    base: &dyn Fn(&mut std::process::Command),
    taxonomy: &[Vec<u8>],
) {
    let mut missing = wander(dir);
    base(&mut missing);
    let out = run(missing.arg("refresh"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refresh.data is not set"),
        "{}",
        stderr(&out)
    );
    let empty = dir.join("empty-window");
    std::fs::create_dir_all(&empty).unwrap();
    let mut nothing = wander(dir);
    base(&mut nothing);
    let out = run(nothing.args(["refresh", "--data"]).arg(&empty));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("empty-window") && stderr(&out).contains("data.format = \"recbole\""),
        "{}",
        stderr(&out)
    );

    let mut fetch = wander(dir);
    base(&mut fetch);
    let out = run(fetch.args(["assets", "fetch", "movielens-100k"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let asset = std::path::PathBuf::from(json(&out)["movielens-100k"]["dir"].as_str().unwrap());
    let find = |ext: &str| {
        walk(&asset)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("no .{ext} file under {}", asset.display()))
    };
    let items = std::fs::read_to_string(find("item")).unwrap();
    let inter = std::fs::read_to_string(find("inter")).unwrap();
    let columns = |header: &str| -> Vec<String> {
        header
            .split('\t')
            .map(|c| c.split(':').next().unwrap().to_string())
            .collect()
    };
    let item_cols = columns(items.lines().next().unwrap());
    let inter_cols = columns(inter.lines().next().unwrap());
    let row = |cols: &[String], values: &[(&str, String)]| -> String {
        cols.iter()
            .map(|c| {
                values
                    .iter()
                    .find(|(k, _)| k == c)
                    .map_or(String::new(), |(_, v)| v.clone())
            })
            .collect::<Vec<_>>()
            .join("\t")
    };
    let films = [
        ("90001", "Starship Rebellion", "1998", "Action Sci-Fi War"),
        (
            "90002",
            "A Quiet Wedding in Provence",
            "1998",
            "Comedy Romance",
        ),
        (
            "90003",
            "Toons on Parade",
            "1998",
            "Animation Children's Musical",
        ),
    ];
    let mut newer_items = items.trim_end().to_string();
    for (id, title, year, class) in films {
        let values = [
            ("item_id", id.to_string()),
            ("movie_title", title.to_string()),
            ("release_year", year.to_string()),
            ("class", class.to_string()),
        ];
        newer_items.push('\n');
        newer_items.push_str(&row(&item_cols, &values));
    }
    newer_items.push('\n');
    let last: i64 = inter
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split('\t')
                .nth(inter_cols.iter().position(|c| c == "timestamp").unwrap())?
                .parse::<f64>()
                .ok()
        })
        .fold(0.0, f64::max) as i64;
    let mut newer_inter = inter.lines().next().unwrap().to_string();
    let mut on_new = 0;
    let mut n = 0;
    for user in (1..=40).chain([5000]) {
        for k in 0..8u32 {
            // Known films spread over the catalogue, and every third rating on a new one.
            let item = if k % 3 == 2 {
                on_new += 1;
                films[(user as usize + k as usize) % 3].0.to_string()
            } else {
                (1 + (user * 37 + k * 211) % 1682).to_string()
            };
            let rating = 3 + (user + k) % 3;
            let t = last + 86_400 + i64::from(user) * 600 + i64::from(k) * 3_600;
            let values = [
                ("user_id", user.to_string()),
                ("item_id", item),
                ("rating", rating.to_string()),
                ("timestamp", t.to_string()),
            ];
            newer_inter.push('\n');
            newer_inter.push_str(&row(&inter_cols, &values));
            n += 1;
        }
    }
    newer_inter.push('\n');
    let newer = dir.join("newer");
    std::fs::create_dir_all(&newer).unwrap();
    std::fs::write(newer.join("newer.item"), newer_items).unwrap();
    std::fs::write(newer.join("newer.inter"), newer_inter).unwrap();

    let mut refresh = wander(dir);
    base(&mut refresh);
    let out = run(refresh.args(["refresh", "--data"]).arg(&newer));
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["new_items"], 3, "{s}");
    assert_eq!(s["items"], 1685);
    assert_eq!(s["new_users"], 1);
    assert_eq!(s["users"], 944);
    assert_eq!(s["interactions"], n);
    // The newer window's transitions, for a table that retrieves them first.
    let newer_transitions: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(dir.join("run/refresh/newer_transitions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        newer_transitions.len() as u64,
        s["drift"]["newer_transitions"].as_u64().unwrap(),
        "{s}"
    );
    assert_eq!(s["interactions_on_new_items"], on_new);
    assert_eq!(s["taxonomy_version"], 2);
    assert_eq!(
        s["embedded_items"], 3,
        "only the new items are embedded; the rest are cached"
    );
    let check = &s["placement_check"];
    let (fine, coarse, majority) = (
        check["fine_accuracy"].as_f64().unwrap(),
        check["coarse_accuracy"].as_f64().unwrap(),
        check["majority_fine_accuracy"].as_f64().unwrap(),
    );
    assert!(check["held_out"].as_u64().unwrap() >= 64, "{check}");
    assert!(
        fine > 2.0 * majority,
        "text-only placement {fine} vs the most common cluster {majority}"
    );
    assert!(coarse >= fine, "{check}");
    assert!(s["drift"]["newer_transitions"].as_u64().unwrap() > 0, "{s}");
    assert!(
        s["drift"]["base_transitions"].as_u64().unwrap() > 1000,
        "{s}"
    );
    let placed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run/refresh/new_items.json")).unwrap())
            .unwrap();
    let placed = placed.as_array().unwrap();
    assert_eq!(placed.len(), 3);
    let clusters: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run/refresh/clusters.json")).unwrap())
            .unwrap();
    assert_eq!(clusters["item_fine"].as_array().unwrap().len(), 1685);
    for p in placed {
        let fine = p["fine"].as_u64().unwrap() as usize;
        assert!(fine < 64, "{p}");
        assert_eq!(clusters["fine"][fine]["parent"], p["coarse"], "{p}");
    }
    // The built taxonomy is untouched, and a second refresh of the same window is a no-op.
    for (f, bytes) in ["clusters.json", "item_clusters.parquet"]
        .iter()
        .zip(taxonomy)
    {
        assert_eq!(
            &std::fs::read(dir.join("run/taxonomy").join(f)).unwrap(),
            bytes,
            "{f} changed"
        );
    }
    let mut again = wander(dir);
    base(&mut again);
    let out = run(again.args(["refresh", "--data"]).arg(&newer));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["skipped"], true);

    // F1's refreshes as a chain of runs: a child run continues the refreshed parent. Its log
    // is the parent's followed by the window, its taxonomy the parent's refreshed one, and
    // a refresh of the child extends it again (version 3).
    let child = dir.join("child");
    let in_child = |cmd: &mut std::process::Command| {
        base(cmd);
        cmd.arg("--set")
            .arg(format!("run.dir=\"{}\"", child.display()))
            .arg("--set")
            .arg(format!("run.parent=\"{}\"", dir.join("run").display()));
    };
    let mut ingest = wander(dir);
    in_child(&mut ingest);
    let out = run(ingest.arg("ingest"));
    assert!(out.status.success(), "{}", stderr(&out));
    let c = json(&out);
    assert_eq!(c["interactions"], 100_000 + n, "{c}");
    assert_eq!(
        (c["items"].as_u64(), c["users"].as_u64()),
        (Some(1685), Some(944)),
        "{c}"
    );
    let split = &c["temporal_split"];
    assert!(split["test"].as_u64().unwrap() > 0, "{c}");
    let mut tax = wander(dir);
    in_child(&mut tax);
    let out = run(tax.arg("taxonomy"));
    assert!(out.status.success(), "{}", stderr(&out));
    let t = json(&out);
    assert_eq!(t["version"], 2, "{t}");
    assert_eq!(t["embedded_items"], 0, "every text is in the cache: {t}");
    assert_eq!(
        std::fs::read(child.join("taxonomy/clusters.json")).unwrap(),
        std::fs::read(dir.join("run/refresh/clusters.json")).unwrap(),
        "the child's taxonomy is the parent's refreshed one"
    );
    // A parent without a refresh is refused, with what to run.
    let mut early = wander(dir);
    base(&mut early);
    early
        .arg("--set")
        .arg(format!("run.dir=\"{}\"", dir.join("early").display()))
        .arg("--set")
        .arg(format!("run.parent=\"{}\"", child.display()));
    let out = run(early.arg("ingest"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has no refresh"), "{}", stderr(&out));
    // The child's own next window: one more new film, rated after everything so far.
    let window = dir.join("newer-2");
    std::fs::create_dir_all(&window).unwrap();
    let mut items_2 = std::fs::read_to_string(newer.join("newer.item")).unwrap();
    items_2.push_str(&row(
        &item_cols,
        &[
            ("item_id", "90004".to_string()),
            ("movie_title", "Harbour Lights".to_string()),
            ("release_year", "1998".to_string()),
            ("class", "Drama Romance".to_string()),
        ],
    ));
    items_2.push('\n');
    let mut inter_2 = inter.lines().next().unwrap().to_string();
    for user in 1..=6u32 {
        for (k, item) in ["90004", "50", "181"].iter().enumerate() {
            let t = last + 40 * 86_400 + i64::from(user) * 600 + k as i64 * 3_600;
            inter_2.push('\n');
            inter_2.push_str(&row(
                &inter_cols,
                &[
                    ("user_id", user.to_string()),
                    ("item_id", item.to_string()),
                    ("rating", "4".to_string()),
                    ("timestamp", t.to_string()),
                ],
            ));
        }
    }
    inter_2.push('\n');
    std::fs::write(window.join("newer.item"), items_2).unwrap();
    std::fs::write(window.join("newer.inter"), inter_2).unwrap();
    let mut refresh = wander(dir);
    in_child(&mut refresh);
    let out = run(refresh.args(["refresh", "--data"]).arg(&window));
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(
        (r["taxonomy_version"].as_u64(), r["new_items"].as_u64()),
        (Some(3), Some(1)),
        "{r}"
    );
    assert_eq!(r["items"], 1686, "{r}");
    // A parent that is no run is named.
    let mut fresh_child = wander(dir);
    base(&mut fresh_child);
    fresh_child
        .arg("--set")
        .arg(format!("run.dir=\"{}\"", dir.join("grandchild").display()))
        .arg("--set")
        .arg(format!("run.parent=\"{}\"", dir.join("nowhere").display()));
    let out = run(fresh_child.arg("ingest"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("run.parent") && stderr(&out).contains("nowhere"),
        "{}",
        stderr(&out)
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `wander aggregate --check` on the real log and taxonomy: the DataFusion plans, embedded and
/// on a Ballista scheduler and two executors (three processes on loopback), give exactly the
/// in-memory miners' rows, and the log stages on them write the in-memory artifacts.
#[cfg(feature = "engine")]
fn aggregate_checks(dir: &std::path::Path, base: &dyn Fn(&mut std::process::Command)) {
    let mut agg = wander(dir);
    base(&mut agg);
    let out = run(agg.args(["aggregate", "--check"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["matches_in_memory"], true);
    assert_eq!(s["events"], 100_000);
    assert!(
        s["compared_rows"]["transitions"].as_u64().unwrap() > 1000,
        "{s}"
    );
    assert!(
        s["compared_rows"]["co_consumption"].as_u64().unwrap() > 10_000,
        "{s}"
    );
    assert!(dir.join("run/aggregate/manifest.json").is_file());
    // The log stages on the engine (the taxonomy's popularity and co-consumption, the
    // transitions, the feedback labels) write the in-memory miners' artifacts, byte for byte.
    let log_stages = |setting: &[&str], mined_on: Option<&str>| -> Vec<serde_json::Value> {
        ["taxonomy", "transitions", "feedback"]
            .iter()
            .map(|stage| {
                let mut cmd = wander(dir);
                base(&mut cmd);
                let out = run(cmd.args(setting).args([stage, "--force"]));
                assert!(out.status.success(), "{stage}: {}", stderr(&out));
                let manifest: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(dir.join("run").join(stage).join("manifest.json")).unwrap(),
                )
                .unwrap();
                assert_eq!(
                    manifest["summary"]["engine"]["engine"].as_str(),
                    mined_on,
                    "{stage}: {manifest}"
                );
                manifest["outputs"].clone()
            })
            .collect()
    };
    let in_memory = log_stages(&[], None);
    let engine = ["--set", "engine.log_stages=\"engine\""];
    assert_eq!(log_stages(&engine, Some("embedded")), in_memory);
    // The same stage on Ballista: `wander-ballista` sits next to `wander` in the target folder.
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_wander"));
    let launcher = exe.with_file_name("wander-ballista");
    assert!(
        launcher.is_file(),
        "{} is built by `cargo test --workspace`",
        launcher.display()
    );
    // A scheduler and two executors, each its own process, as on a real cluster; killed
    // when the test ends, pass or fail.
    struct Cluster(Vec<std::process::Child>);
    impl Drop for Cluster {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    let mut scheduler = std::process::Command::new(&launcher)
        .arg("scheduler")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(scheduler.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let mut cluster = Cluster(vec![scheduler]);
    let url: serde_json::Value = serde_json::from_str(&line).unwrap();
    let url = url["scheduler"].as_str().unwrap().to_string();
    for _ in 0..2 {
        cluster.0.push(
            std::process::Command::new(&launcher)
                .args(["executor", "--scheduler", &url, "--cores", "1"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let mut agg = wander(dir);
    base(&mut agg);
    let out = run(agg.args(["aggregate", "--check", "--force", "--engine", &url]));
    let on_ballista = log_stages(
        &[
            engine[0],
            engine[1],
            "--set",
            &format!("engine.url=\"{url}\""),
        ],
        Some(&url),
    );
    drop(cluster);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["matches_in_memory"], true);
    assert_eq!(s["engine"], url.as_str());
    assert_eq!(on_ballista, in_memory);
    let mut bad = wander(dir);
    base(&mut bad);
    let out = run(bad.args(["aggregate", "--engine", "spark://x:1"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ballista://HOST:PORT"),
        "{}",
        stderr(&out)
    );
}

/// The pipeline on the real data and SmolLM2, shrunk to seconds, writing into `run`.
fn tiny_settings(run: &std::path::Path) -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    vec![
        format!("run.dir=\"{}\"", run.display()),
        format!(
            "assets.cache_dir=\"{}\"",
            root.join(".wander/assets").display()
        ),
        format!(
            "taxonomy.cache_dir=\"{}\"",
            root.join(".wander/cache").display()
        ),
        "novelty.examples=16".into(),
        "novelty.eval_examples=4".into(),
        "novelty.steps=2".into(),
        "novelty.batch_size=4".into(),
        "novelty.warmup_steps=1".into(),
        "novelty.eval_every=1".into(),
        "novelty.checkpoint_every=1".into(),
        "novelty.eval_events=8".into(),
        "novelty.eval_samples=1".into(),
        "novelty.bootstrap_rounds=50".into(),
        // A small taxonomy keeps the all-pairs precompute to seconds.
        "taxonomy.coarse_clusters=4".into(),
        "taxonomy.fine_clusters=12".into(),
        "feedback.min_users=2".into(),
        // The per-cluster head's baseline (configs/head.toml), the cheapest alignment model,
        // for the plumbing these tests check; the candidate reader, the default, runs below
        // in a run of its own and in the quick start that CI runs.
        "feedback.shrinkage=0".into(),
        "alignment.arch=\"cluster_head\"".into(),
        "alignment.prior=\"learned\"".into(),
        "precompute.score=\"all\"".into(),
        "precompute.draws=0".into(),
        "precompute.temperature=1.0".into(),
        "precompute.prior_weight=1.0".into(),
        "alignment.steps=2".into(),
        "alignment.batch_size=4".into(),
        "alignment.warmup_steps=1".into(),
        "alignment.eval_every=1".into(),
        // The periodic eval loss over a few validation prompts, not hundreds.
        "alignment.eval_prompts=16".into(),
        "alignment.bootstrap_rounds=50".into(),
        "precompute.chunk_pairs=16".into(),
        "precompute.scaling_n=[1, 4]".into(),
        "precompute.scaling_draws=10".into(),
        "precompute.bootstrap_rounds=50".into(),
        "items.max_epochs=2".into(),
        "items.dim=16".into(),
        "items.batch_size=256".into(),
        "simulate.users=600".into(),
        "simulate.days=6".into(),
        "simulate.seeds=3".into(),
    ]
}

/// The whole pipeline so far on the real data and SmolLM2, shrunk to seconds: transitions,
/// a two-step LoRA fine-tune, and the evaluation report with every method.
#[test]
fn novelty_pipeline_end_to_end_with_tiny_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = tiny_settings(&tmp.path().join("run"));
    let stage = |args: &[&str]| {
        let mut cmd = wander(tmp.path());
        cmd.arg("--json");
        for s in &sets {
            cmd.arg("--set").arg(s);
        }
        let started = std::time::Instant::now();
        let out = run(cmd.args(args));
        // Where this test's time goes, for `--nocapture` (it is the longest test).
        eprintln!("{args:?}: {:.1} s", started.elapsed().as_secs_f64());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        json(&out)
    };
    let ingested = stage(&["ingest"]);
    stage(&["taxonomy"]);
    let t = stage(&["transitions"]);
    assert_eq!(t["sft_examples"], 16);
    assert!(t["train"]["transitions"].as_u64().unwrap() > 1000);
    let jsonl =
        std::fs::read_to_string(tmp.path().join("run/transitions/sft_train.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 16);
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["messages"][2]["role"], "assistant");
    // MovieLens-100K spans seven months: eight periods of 28 days, the first two fit the
    // stale table and the other six are replayed.
    let d = stage(&["eval", "drift"]);
    assert_eq!(d["periods"].as_array().unwrap().len(), 8);
    assert_eq!(d["replay_periods"], serde_json::json!([2, 3, 4, 5, 6, 7]));
    let jaccard = d["successor_jaccard"].as_f64().unwrap();
    assert!(jaccard > 0.0 && jaccard < 1.0 && d["jaccard_pairs"].as_u64().unwrap() > 10);
    for strategy in ["stale", "refreshed", "last_period", "refreshed_recent_hint"] {
        let hit = d["replay"][strategy]["hit_at_k"]["mean"].as_f64().unwrap();
        assert!(hit > 0.0 && hit < 1.0, "{strategy}: {hit}");
    }
    assert_eq!(d["replay"]["stale"]["hit_at_k_vs_stale"]["mean"], 0.0);
    let drift_md = std::fs::read_to_string(tmp.path().join("run/eval_drift/report.md")).unwrap();
    assert!(drift_md.contains("| 1997-09-20 |") && drift_md.contains("| refreshed_recent_hint |"));
    let mut too_short = wander(tmp.path());
    too_short.arg("--json");
    for s in &sets {
        too_short.arg("--set").arg(s);
    }
    // A log shorter than the warm-up is reported, not an error: `wander run` goes on.
    let out = run(too_short.args(["--set", "drift.period_days=400", "eval", "drift"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("drift.warmup_periods"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json(&out)["replay_periods"], serde_json::json!([]));
    assert_eq!(json(&out)["replay_events"], 0);
    let tr = stage(&["train", "novelty"]);
    assert_eq!(tr["steps"], 2);
    assert!(tmp
        .path()
        .join("run/train_novelty/adapter.safetensors")
        .is_file());
    assert!(
        !tmp.path().join("run/.checkpoints/novelty").exists(),
        "checkpoints are removed once the stage is committed"
    );
    let ev = stage(&["eval", "novelty"]);
    assert_eq!(ev["events"], 8);
    for m in [
        "random",
        "popularity",
        "cooccurrence",
        "zero_shot",
        "fine_tuned",
    ] {
        let h = ev["methods"][m]["hit_at_5"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&h), "{m}: {h}");
    }
    assert_eq!(
        ev["methods"]["fine_tuned"]["constrained_validity"]["mean"],
        1.0
    );
    let agree = ev["methods"]["fine_tuned"]["repeat_agreement"]["mean"]
        .as_f64()
        .unwrap();
    assert!(agree > 0.0 && agree <= 1.0, "{agree}");
    let report = std::fs::read_to_string(tmp.path().join("run/eval_novelty/report.md")).unwrap();
    assert!(report.contains("Protocol:") && report.contains("| cooccurrence |"));

    // The alignment half: labels, a two-step alignment model, its evaluation.
    let fb = stage(&["feedback"]);
    let train_labels = fb["train"]["labels"].as_u64().unwrap();
    assert!(train_labels > 50, "{fb}");
    assert!(
        fb["train"]["events"].as_u64().unwrap() > fb["train"]["positive_events"].as_u64().unwrap(),
        "negatives count"
    );
    let lines =
        std::fs::read_to_string(tmp.path().join("run/feedback/pointwise_train.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, train_labels);
    let ta = stage(&["train", "alignment"]);
    assert_eq!(ta["steps"], 2);
    assert!(tmp
        .path()
        .join("run/train_alignment/head.safetensors")
        .is_file());
    // SmolLM2's adapters in PEFT's layout: 30 layers x 4 targets x (A, B).
    let ex = stage(&["export"]);
    assert_eq!(ex["base_model"], "HuggingFaceTB/SmolLM2-135M-Instruct");
    assert_eq!(
        (
            ex["novelty_tensors"].as_u64(),
            ex["alignment_tensors"].as_u64()
        ),
        (Some(240), Some(240))
    );
    let peft: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("run/export/novelty/adapter_config.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        peft["target_modules"],
        serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj"])
    );
    let ea = stage(&["eval", "alignment"]);
    for m in ["alignment_llm", "cluster_global_rate", "linear_embeddings"] {
        let mae = ea["methods"][m]["mae"]["mean"].as_f64().unwrap();
        assert!(mae.is_finite() && mae >= 0.0, "{m}: {ea}");
    }
    assert!(ea["verdict"].as_str().unwrap().contains("alignment LLM"));
    assert_eq!(ea["arch"], "cluster_head");
    for m in ["alignment_llm", "cluster_global_rate", "linear_embeddings"] {
        let w = &ea["methods"][m]["within_pair_spearman"]["mean"];
        assert!(
            w.as_f64().is_some_and(|w| (-1.0..=1.0).contains(&w)),
            "{m}: {ea}"
        );
    }

    // The candidate-reading alignment model (P2's scorer), in a run of its own that shares
    // the labels: two steps, then its evaluation reads the candidate for every triple.
    let cand = tmp.path().join("run_candidate");
    std::fs::create_dir_all(&cand).unwrap();
    for s in ["ingest", "taxonomy", "transitions", "feedback"] {
        copy_dir(&tmp.path().join("run").join(s), &cand.join(s));
    }
    let candidate_stage = |args: &[&str]| {
        let mut cmd = wander(tmp.path());
        cmd.arg("--json");
        for s in &sets {
            cmd.arg("--set").arg(s);
        }
        cmd.args(["--set", &format!("run.dir=\"{}\"", cand.display())]);
        cmd.args(["--set", "alignment.arch=\"candidate\""]);
        // A quarter of the clusters never seen as a candidate in training.
        cmd.args(["--set", "alignment.holdout_candidates=0.25"]);
        // Its eval loss reads every label of each sampled history pair: four pairs.
        cmd.args(["--set", "alignment.eval_prompts=4"]);
        let started = std::time::Instant::now();
        let out = run(cmd.args(args));
        eprintln!(
            "candidate {args:?}: {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        json(&out)
    };
    let tc = candidate_stage(&["train", "alignment"]);
    assert_eq!(tc["arch"], "candidate");
    let held: Vec<u64> = tc["holdout_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert!(
        (1..=4).contains(&held.len()),
        "about a quarter of the planner clusters: {tc}"
    );
    let prompts = tc["prompts"].as_u64().unwrap();
    assert!(prompts > 0 && prompts < train_labels, "{tc}");
    let ec = candidate_stage(&["eval", "alignment"]);
    assert_eq!(ec["arch"], "candidate");
    assert_eq!(ec["holdout_candidates"], tc["holdout_candidates"]);
    assert!(
        ec["heldout_candidate_triples"].as_u64().unwrap() > 0,
        "{ec}"
    );
    let p: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(cand.join("eval_alignment/predictions.json")).unwrap(),
    )
    .unwrap();
    let distinct: std::collections::BTreeSet<String> =
        p.iter().map(|r| r["alignment_llm"].to_string()).collect();
    assert!(
        distinct.len() > 1,
        "a candidate-reading model scores candidates differently"
    );

    // kill -9 in the middle of a precompute: the rerun keeps the finished chunks.
    let mut cmd = wander(tmp.path());
    for s in &sets {
        cmd.arg("--set").arg(s);
    }
    let mut child = cmd
        .arg("precompute")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let work = tmp.path().join("run/.work");
    let chunks_done = || -> usize {
        std::fs::read_dir(&work)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|f| f.file_name().to_string_lossy().starts_with("chunk-"))
            .count()
    };
    let t0 = std::time::Instant::now();
    while chunks_done() == 0 && t0.elapsed().as_secs() < 300 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let kept = chunks_done();
    assert!((1..9).contains(&kept), "{kept} chunks when killed");
    let mut resume = wander(tmp.path());
    resume.arg("--json");
    for s in &sets {
        resume.arg("--set").arg(s);
    }
    let resumed = run(resume.arg("precompute"));
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains(&format!("{} chunks already done", kept)),
        "{}",
        stderr(&resumed)
    );
    let after_kill = std::fs::read(tmp.path().join("run/precompute/table.bin")).unwrap();

    // Precompute in two shards, then merged; the table must be identical to the resumed
    // one and to a from-scratch run (deterministic for the seed).
    let s0 = stage(&["precompute", "--shard", "0/2", "--force"]);
    assert!(s0["chunks_missing_overall"].as_u64().unwrap() > 0);
    let mut merge = wander(tmp.path());
    merge.arg("--json");
    for s in &sets {
        merge.arg("--set").arg(s);
    }
    let early = run(merge.args(["precompute", "--merge"]));
    assert!(
        !early.status.success(),
        "merging with a shard missing must fail"
    );
    assert!(
        stderr(&early).contains("not computed yet"),
        "{}",
        stderr(&early)
    );
    stage(&["precompute", "--shard", "1/2"]);
    let merged = stage(&["precompute", "--merge"]);
    assert_eq!(merged["pairs"], 132, "12 x 11 ordered pairs");
    assert!(merged["fallbacks"].as_u64().unwrap() <= 13, "{merged}");
    let table = std::fs::read(tmp.path().join("run/precompute/table.bin")).unwrap();
    assert_eq!(
        table, after_kill,
        "sharded and resumed runs give the same table"
    );
    assert!(stage(&["precompute"])["skipped"].as_bool().unwrap());
    let again = stage(&["precompute", "--force"]);
    assert_eq!(again["pairs"], 132);
    assert_eq!(
        std::fs::read(tmp.path().join("run/precompute/table.bin")).unwrap(),
        table,
        "same seed, same table"
    );
    assert!(tmp.path().join("run/precompute/table.parquet").is_file());

    let sc = stage(&["eval", "scaling"]);
    for s in [
        "best_of_1",
        "best_of_4",
        "novelty_only_1",
        "novelty_only_4",
        "cooccurrence",
    ] {
        let h = sc["strategies"][s]["hit_at_1"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&h), "{s}: {sc}");
    }
    // n = 1: best-of-1 and most-frequent-of-1 are the same draw, so hit@1 agrees in expectation.
    let b1 = sc["strategies"]["best_of_1"]["hit_at_1"]["mean"]
        .as_f64()
        .unwrap();
    let f1 = sc["strategies"]["novelty_only_1"]["hit_at_1"]["mean"]
        .as_f64()
        .unwrap();
    assert!((b1 - f1).abs() < 0.1, "{b1} vs {f1}");
    let svg = std::fs::read_to_string(tmp.path().join("run/eval_scaling/scaling.svg")).unwrap();
    assert!(svg.starts_with("<svg"));

    // Every strategy under one protocol.
    let ev = stage(&["eval"]);
    assert_eq!(ev["strategies"]["oracle"]["hit_at_1"]["mean"], 1.0);
    for s in [
        "random_novel",
        "popular_novel",
        "cooccurrence",
        "novelty_only_n1",
        "best_of_16",
    ] {
        let v = &ev["strategies"][s];
        assert!(
            (0.0..=1.0).contains(&v["hit_at_1"]["mean"].as_f64().unwrap()),
            "{s}: {v}"
        );
        // The novelty model here has had two training steps and repeats one of the history's
        // clusters about half the time, so one proposal of it is valid for about half the
        // events (0.496 [0.483, 0.507] at e2c27af, above 0.5 before it: the kernels'
        // rounding moves it). The bound checks that validity counts served novel clusters,
        // not the model's quality; the other strategies stay above a half.
        let floor = if s == "novelty_only_n1" { 0.3 } else { 0.5 };
        assert!(v["validity"]["mean"].as_f64().unwrap() > floor, "{s}: {v}");
    }
    let rep = std::fs::read_to_string(tmp.path().join("run/eval/report.md")).unwrap();
    assert!(
        rep.starts_with("# Exploration strategies")
            && rep.contains("Protocol:")
            && rep.contains("Definitions and sources")
    );

    // Closed-loop simulation: an A/B run with every strategy arm, and an A/A run.
    let sim = stage(&["simulate"]);
    assert_eq!(sim["arms"].as_array().unwrap().len(), 5);
    let e = &sim["effects"]["best_of_n"]["positive_rate"];
    assert!(e["lo"].as_f64().unwrap() <= e["hi"].as_f64().unwrap());
    let sim_md = std::fs::read_to_string(tmp.path().join("run/simulate/report.md")).unwrap();
    assert!(sim_md.contains("| arm | exploration positive rate | positive rate of exploration clicks | fallback share |"), "{sim_md}");
    let daily: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("run/simulate/daily.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        daily["series"]["best_of_n"]["active_share"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let aa = stage(&["simulate", "--aa"]);
    assert_eq!(aa["arms"][0], "cooccurrence_a");

    let rep = stage(&["report"]);
    assert!(rep["figures"].as_u64().unwrap() >= 3, "{rep}");
    let html = std::fs::read_to_string(tmp.path().join("run/report/report.html")).unwrap();
    assert!(
        html.contains("<svg")
            && html.contains("Closed-loop A/B simulation")
            && html.contains("Drift of transitions over time")
            && html.contains("feedback by training-period labels")
            && !html.contains("missing figure")
    );

    // The item policy, then the service on everything the pipeline produced.
    let ti = stage(&["train", "items"]);
    assert_eq!(ti["epochs"], 2);
    let ei = stage(&["eval", "items"]);
    assert_eq!(ei["retrieval"]["violations"], 0);
    let s = ei["methods"]["sasrec"]["ndcg_at_10"]["mean"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&s));
    // The serving bundle: what the service reads, and nothing else.
    let b = stage(&["bundle"]);
    assert!(b["clusters"].as_u64().unwrap() >= 2, "{b}");
    assert_eq!(b["items"], ingested["items"], "{b}");
    assert_eq!(
        b["table_version"],
        serde_json::Value::String(
            wander_core::hash::sha256_file(&tmp.path().join("run/precompute/manifest.json"))
                .unwrap()
        )
    );
    let mut args: Vec<String> = Vec::new();
    for s in &sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    args.extend([
        "--set".into(),
        "serve.bind=\"127.0.0.1:0\"".into(),
        "--set".into(),
        "serve.admin_token=\"s3cret\"".into(),
        "--set".into(),
        "serve.max_body_bytes=4096".into(),
    ]);
    serve_checks(tmp.path(), &args);

    // Publishing behind gates (F1): a version serves, a refused bundle changes nothing, a
    // new version and a rollback reach the running service by themselves.
    let publish_with = |extra: &[&str], flags: &[&str]| -> (bool, serde_json::Value) {
        let mut cmd = wander(tmp.path());
        cmd.arg("--json");
        for s in &sets {
            cmd.arg("--set").arg(s);
        }
        // The two-step models' figures are not what the defaults gate on.
        cmd.args([
            "--set",
            "publish.min_alignment_spearman=-1",
            "--set",
            "publish.min_recall_at_5=0",
        ]);
        let out = run(cmd.args(extra).arg("publish").args(flags));
        let summary = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.success(), summary)
    };
    let publish = |extra: &[&str]| publish_with(extra, &[]);
    let published = tmp.path().join("run/published");
    let (ok, v1) = publish(&[]);
    assert!(ok, "{v1}");
    assert_eq!(
        (v1["action"].as_str(), v1["published"].as_u64()),
        (Some("publish"), Some(1)),
        "{v1}"
    );
    assert!(
        v1["gates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["passed"] == true),
        "{v1}"
    );
    assert_eq!(
        std::fs::read_link(published.join("current")).unwrap(),
        std::path::Path::new("versions/1")
    );
    assert!(published.join("versions/1/bundle/manifest.json").is_file());
    let table_v1 = b["table_version"].as_str().unwrap().to_string();
    let mut served_args = args.clone();
    served_args.extend([
        "--set".into(),
        format!("run.dir=\"{}\"", published.join("current").display()),
        "--set".into(),
        "serve.watch_ms=100".into(),
    ]);
    let server = start_server(tmp.path(), &served_args).expect("serves the published version");
    let served_table = || -> String {
        let (_, metrics) = http(&server.addr, "GET", "/metrics", &[], b"");
        let line = metrics
            .lines()
            .find(|l| l.starts_with("wander_table_info"))
            .unwrap_or("")
            .to_string();
        line.split('"').nth(1).unwrap_or("").to_string()
    };
    let eventually = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while served_table() != want && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(served_table(), want, "{:?}", server.log.lock().unwrap());
    };
    eventually(&table_v1);
    // A gate that fails refuses the bundle: exit 1, nothing switched, the history says why.
    let (ok, refused) = publish(&["--set", "publish.min_recall_at_5=1"]);
    assert!(!ok, "{refused}");
    assert_eq!(refused["action"], "refuse", "{refused}");
    assert_eq!(refused["current"], 1, "{refused}");
    assert!(
        refused["gates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "recall_at_5" && g["passed"] == false),
        "{refused}"
    );
    // A retrained novelty model whose table was built but which nobody evaluated is refused.
    let retrained = ["--set", "novelty.steps=3"];
    stage(&[&retrained[..], &["train", "novelty"]].concat());
    stage(&[&retrained[..], &["precompute"]].concat());
    let b2 = stage(&[&retrained[..], &["bundle"]].concat());
    let table_v2 = b2["table_version"].as_str().unwrap().to_string();
    assert_ne!(table_v2, table_v1);
    let (ok, unevaluated) = publish(&retrained);
    assert!(!ok, "{unevaluated}");
    assert!(
        unevaluated["gates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["passed"] == false
                && g["source"].as_str().unwrap().contains("evaluated another")),
        "{unevaluated}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        served_table(),
        table_v1,
        "a refused bundle never reaches the service"
    );
    // Evaluated, it passes (its hit@5 against v1's too, at the default 20% allowed drop, or
    // the test says which gate held it back) and the service picks it up.
    stage(&[&retrained[..], &["eval", "novelty"]].concat());
    let (ok, v2) = publish(&retrained);
    assert!(ok, "{v2}");
    assert_eq!(v2["published"], 2, "{v2}");
    assert!(
        v2["gates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "recall_at_5_vs_current"),
        "{v2}"
    );
    eventually(&table_v2);
    let history = std::fs::read_to_string(published.join("history.jsonl")).unwrap();
    let actions: Vec<String> = history
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(actions, ["publish", "refuse", "refuse", "publish"]);
    // Rollback: the previous version serves again.
    let (ok, back) = publish_with(&[], &["--rollback"]);
    assert!(ok, "{back}");
    assert_eq!(
        (back["action"].as_str(), back["current"].as_u64()),
        (Some("rollback"), Some(1)),
        "{back}"
    );
    eventually(&table_v1);
    assert_eq!(
        publish_with(&[], &["--list"]).1["versions"],
        serde_json::json!([1, 2])
    );
    drop(server);
    // The rest of this test runs on the first novelty model again.
    stage(&["train", "novelty"]);
    stage(&["eval", "novelty"]);

    // A table of the busiest training pairs only, for taxonomies too large to cover whole.
    let traffic = stage(&[
        "--set",
        "precompute.pairs=\"traffic\"",
        "--set",
        "precompute.max_pairs=8",
        "precompute",
    ]);
    assert_eq!(traffic["pairs"], 8, "{traffic}");
}

/// Every endpoint of the real server, malformed input, a reload under load, and a corrupt
/// table (refused at reload and at startup).
fn serve_checks(dir: &std::path::Path, args: &[String]) {
    let server = start_server(dir, args).expect("server starts");
    let addr = server.addr.clone();
    let json_h = [("Content-Type", "application/json")];
    let (st, body) = http(&addr, "GET", "/healthz", &[], b"");
    assert_eq!((st, body.as_str()), (200, "ok"));
    assert_eq!(http(&addr, "GET", "/readyz", &[], b"").0, 200);
    // A history of MovieLens ids: known items across clusters.
    let req = br#"{"history": ["1", "2", {"item": 3, "feedback": 5}, {"item": "4", "feedback": 1}, "50", "100", "181", "258"], "clusters": 2, "items": 5}"#;
    let (st, body) = http(&addr, "POST", "/v1/explore", &json_h, req);
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["history_clusters"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["fallback"].is_null(), "{v}");
    let chosen: Vec<u64> = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert!(!chosen.is_empty() && chosen.len() <= 2);
    let hist: Vec<u64> = v["history_clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert!(
        chosen.iter().all(|c| !hist.contains(c)),
        "novel clusters only: {v}"
    );
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    for it in items {
        assert!(
            chosen.contains(&it["cluster"].as_u64().unwrap()),
            "items come from the chosen clusters: {v}"
        );
        assert!(
            !["1", "2", "3", "4", "50", "100", "181", "258"].contains(&it["id"].as_str().unwrap()),
            "no seen item: {v}"
        );
    }
    // Cold start, unknown ids, and errors with stable codes.
    let (st, body) = http(
        &addr,
        "POST",
        "/v1/explore",
        &json_h,
        br#"{"history": ["no-such-item"]}"#,
    );
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["fallback"], "cold_start");
    assert_eq!(v["unknown_items"], 1);
    let code = |st: u16, body: &str| -> (u16, String) {
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("error body is JSON ({e}): {body}"));
        (st, v["error"]["code"].as_str().unwrap().to_string())
    };
    let (st, b) = http(&addr, "POST", "/v1/explore", &json_h, b"{\"history\": [");
    assert_eq!(code(st, &b), (400, "invalid_json".into()));
    let (st, b) = http(&addr, "POST", "/v1/explore", &json_h, br#"{"history": 5}"#);
    assert_eq!(code(st, &b), (422, "invalid_request".into()));
    let (st, b) = http(
        &addr,
        "POST",
        "/v1/explore",
        &json_h,
        br#"{"history": [], "clusters": 1000}"#,
    );
    assert_eq!(code(st, &b), (422, "invalid_clusters".into()));
    let big = format!("{{\"history\": [{}]}}", vec!["\"1\""; 2000].join(","));
    let (st, b) = http(&addr, "POST", "/v1/explore", &json_h, big.as_bytes());
    assert_eq!(code(st, &b), (413, "body_too_large".into()));
    let (st, b) = http(&addr, "POST", "/v1/explore", &[], br#"{"history": []}"#);
    assert_eq!(code(st, &b), (415, "unsupported_media_type".into()));
    let (st, b) = http(&addr, "POST", "/v1/explore", &json_h, &[0xff, 0xfe, 0x00]);
    assert_eq!(st, 400, "{b}");
    let (st, b) = http(&addr, "GET", "/v1/clusters/0", &[], b"");
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("description"));
    let (st, b) = http(&addr, "GET", "/v1/clusters/99999", &[], b"");
    assert_eq!(code(st, &b), (404, "unknown_cluster".into()));
    let (st, b) = http(&addr, "GET", "/v1/clusters/abc", &[], b"");
    assert_eq!(code(st, &b), (400, "invalid_id".into()));
    let (st, b) = http(&addr, "GET", "/v1/clusters/99999999999", &[], b"");
    assert_eq!(code(st, &b), (404, "unknown_cluster".into()));
    let (st, b) = http(&addr, "GET", "/nope", &[], b"");
    assert_eq!(code(st, &b), (404, "not_found".into()));
    let (st, b) = http(&addr, "DELETE", "/v1/explore", &[], b"");
    assert_eq!(code(st, &b), (405, "method_not_allowed".into()));
    let (st, b) = http(&addr, "GET", "/openapi.json", &[], b"");
    assert_eq!(st, 200);
    let doc: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(doc["paths"]["/v1/explore"].is_object());
    // Reload: token required; under concurrent load no request fails.
    let (st, b) = http(
        &addr,
        "POST",
        "/admin/reload",
        &[("Authorization", "Bearer wrong")],
        b"",
    );
    assert_eq!(code(st, &b), (401, "unauthorized".into()));
    let load = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            for _ in 0..150 {
                statuses.push(
                    http(
                        &addr,
                        "POST",
                        "/v1/explore",
                        &[("Content-Type", "application/json")],
                        br#"{"history": ["1", "50", "181"], "items": 3}"#,
                    )
                    .0,
                );
            }
            statuses
        })
    };
    for _ in 0..3 {
        let (st, b) = http(
            &addr,
            "POST",
            "/admin/reload",
            &[("Authorization", "Bearer s3cret")],
            b"",
        );
        assert_eq!(st, 200, "{b}");
    }
    let statuses = load.join().unwrap();
    assert!(
        statuses.iter().all(|&s| s == 200),
        "requests failed during reload: {statuses:?}"
    );
    let (st, m) = http(&addr, "GET", "/metrics", &[], b"");
    assert_eq!(st, 200);
    assert!(
        m.contains("wander_requests_total{endpoint=\"explore\",status=\"200\"}"),
        "{m}"
    );
    assert!(
        m.contains("wander_request_duration_seconds_bucket")
            && m.contains("wander_table_info{version=")
    );
    assert!(m.contains("wander_reloads_total 3"), "{m}");
    assert!(
        m.contains("wander_requests_total{endpoint=\"unmatched\",status=\"405\"} 1")
            && m.contains("wander_requests_total{endpoint=\"unmatched\",status=\"404\"} 1"),
        "{m}"
    );
    // A corrupted table: the reload is refused and the old version keeps serving.
    let table = dir.join("run/bundle/table.bin");
    let good = std::fs::read(&table).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&table, &bad).unwrap();
    let (st, b) = http(
        &addr,
        "POST",
        "/admin/reload",
        &[("Authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(code(st, &b), (409, "reload_failed".into()));
    assert!(
        !b.contains(dir.to_str().unwrap()),
        "no server path reaches the client: {b}"
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            "/v1/explore",
            &json_h,
            br#"{"history": ["1", "50"]}"#
        )
        .0,
        200
    );
    drop(server);
    let refused = start_server(dir, args);
    assert!(refused.is_err(), "a corrupt table must not be served");
    let msg = refused.err().unwrap();
    assert!(msg.contains("corrupt") || msg.contains("checksum"), "{msg}");
    std::fs::write(&table, &good).unwrap();
    sigterm_drains_in_flight_requests(dir, args);
    slow_clients_long_targets_malformed_http_and_access_log(dir, args);
    sigterm_under_keepalive_load_fails_no_request(dir, args);
    a_stalled_client_cannot_hold_the_shutdown_past_the_drain_deadline(dir, args);
}

/// SIGTERM while a client has sent half a body and stalls: the process exits 0 at the
/// drain deadline (`serve.drain_seconds`), not when the client gives up.
fn a_stalled_client_cannot_hold_the_shutdown_past_the_drain_deadline(
    dir: &std::path::Path,
    args: &[String],
) {
    use std::io::Write;
    let mut args = args.to_vec();
    for set in ["serve.drain_seconds=1", "serve.read_timeout_ms=60000"] {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    let mut server = start_server(dir, &args).expect("server starts");
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.write_all(b"POST /v1/explore HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"hist")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.terminate();
    // Not when the client gives up: the drain deadline is 1 s.
    let (status, waited) = server.wait_exit(10.0);
    assert!(status.success(), "exit status: {status}");
    assert!((0.9..5.0).contains(&waited), "exited after {waited:.2} s");
    drop(s);
}

/// The edges of HTTP: a client that sends its head or body too slowly, a target over
/// `serve.max_uri_bytes`, bytes that are not HTTP, and the sampled access log.
fn slow_clients_long_targets_malformed_http_and_access_log(dir: &std::path::Path, args: &[String]) {
    use std::io::{Read, Write};
    let mut args = args.to_vec();
    for set in ["serve.read_timeout_ms=400", "serve.access_log=1.0"] {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    let server = start_server(dir, &args).expect("server starts");
    let addr = server.addr.clone();
    let code = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("error body is JSON ({e}): {body}"));
        v["error"]["code"].as_str().unwrap().to_string()
    };
    let long = format!("/v1/clusters/{}", "9".repeat(9000));
    let (st, b) = http(&addr, "GET", &long, &[], b"");
    assert_eq!((st, code(&b)), (414, "uri_too_long".to_string()), "{b}");
    // A body that stops halfway: 408 once serve.read_timeout_ms has passed.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"POST /v1/explore HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"history\": [").unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "slow body: {out}");
    assert_eq!(code(out.split_once("\r\n\r\n").unwrap().1), "body_timeout");
    assert!(started.elapsed().as_secs_f64() < 5.0);
    // A head that never ends (slowloris): the connection is closed, no answer.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let waited = started.elapsed().as_secs_f64();
    assert!(
        (0.3..5.0).contains(&waited),
        "closed after {waited} s: {out:?}"
    );
    // Not HTTP: hyper answers 400 itself, and /metrics counts it.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"\x16\x03\x01 not http\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"),
        "{out:?}"
    );
    let lines = [
        "wander_connection_errors_total{kind=\"header_timeout\"} 1",
        "wander_connection_errors_total{kind=\"malformed_request\"} 1",
        "wander_requests_total{endpoint=\"unmatched\",status=\"414\"} 1",
        "wander_requests_total{endpoint=\"explore\",status=\"408\"} 1",
    ];
    // hyper shuts the socket down before its connection future ends with the error that
    // the metric counts, so the client can see the close first: wait for the count.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let m = loop {
        let (st, m) = http(&addr, "GET", "/metrics", &[], b"");
        assert_eq!(st, 200);
        if lines.iter().all(|l| m.contains(l)) || std::time::Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for line in lines {
        assert!(m.contains(line), "{line} in:\n{m}");
    }
    // Every request above reached the access log as one JSON line.
    let read_log = || -> (Vec<String>, Vec<serde_json::Value>) {
        let log = server.log.lock().unwrap().clone();
        let entries = log
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (log, entries)
    };
    let (mut log, mut entries) = read_log();
    for _ in 0..100 {
        if entries.len() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        (log, entries) = read_log();
    }
    let statuses: Vec<u64> = entries
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![414, 408, 200], "{log:?}");
    let e = &entries[1];
    assert_eq!(
        (e["method"].as_str(), e["path"].as_str()),
        (Some("POST"), Some("/v1/explore"))
    );
    assert_eq!(e["bytes_in"], 40);
    assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
    assert!(
        e["ms"].as_f64().unwrap() >= 300.0,
        "the 408 waited for the body: {e}"
    );
    fuzzed_request_bodies_get_json_answers(&addr);
}

/// Request bodies from a seeded generator (mutated valid requests, random JSON values,
/// random bytes): each answer is 200 or a JSON error with a code, and the service lives on.
fn fuzzed_request_bodies_get_json_answers(addr: &str) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = br#"{"history": ["1", {"item": 50, "feedback": 4}, "181", 258], "clusters": 2, "items": 5}"#;
    let atoms = [
        "null",
        "true",
        "-1",
        "0",
        "1e309",
        "-0",
        "18446744073709551616",
        "\"\"",
        "[]",
        "{}",
        "\"1\"",
        "1.5",
        "\"\\u0000\"",
        "NaN",
        "[[[[[[[[]]]]]]]]",
        "{\"item\": null}",
        "{\"item\": 1, \"feedback\": 1e400}",
        "{\"item\": [1]}",
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for case in 0..300 {
        let body: Vec<u8> = match case % 3 {
            0 => {
                let mut b = valid.to_vec();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % b.len();
                    match next() % 3 {
                        0 => b[i] = next() as u8,
                        1 => {
                            b.remove(i);
                        }
                        _ => b.insert(i, b"{}[],:\"0-e"[(next() % 10) as usize]),
                    }
                }
                b
            }
            1 => {
                let mut pick = || atoms[(next() % atoms.len() as u64) as usize];
                format!(
                    "{{\"history\": [{}, {}], \"clusters\": {}, \"items\": {}}}",
                    pick(),
                    pick(),
                    pick(),
                    pick()
                )
                .into_bytes()
            }
            _ => (0..next() % 200).map(|_| next() as u8).collect(),
        };
        let (st, answer) = http(
            addr,
            "POST",
            "/v1/explore",
            &[("Content-Type", "application/json")],
            &body,
        );
        *statuses.entry(st).or_insert(0) += 1;
        let shown = String::from_utf8_lossy(&body);
        assert!(
            [200, 400, 413, 415, 422].contains(&st),
            "{st} for {shown:?}: {answer}"
        );
        let v: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("not JSON ({e}) for {shown:?}: {answer}"));
        assert!(st == 200 || v["error"]["code"].is_string(), "{answer}");
    }
    eprintln!("fuzzed request bodies, answers by status: {statuses:?}");
    assert!(
        statuses.len() >= 3,
        "the generator reaches several answers: {statuses:?}"
    );
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").0, 200);
}

/// A load test with SIGTERM in the middle: 8 clients on kept-alive connections; every
/// request the service took is answered 200, and it exits 0.
fn sigterm_under_keepalive_load_fails_no_request(dir: &std::path::Path, args: &[String]) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut server = start_server(dir, args).expect("server starts");
    let (stop, stopping) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let load = {
        let (addr, stop, stopping) = (server.addr.clone(), stop.clone(), stopping.clone());
        std::thread::spawn(move || {
            util::keepalive_load(
                &addr,
                8,
                "/v1/explore",
                br#"{"history": ["1", "50", "181"], "items": 3}"#,
                stop,
                stopping,
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(800));
    stopping.store(true, Ordering::Relaxed);
    server.terminate();
    let (status, _) = server.wait_exit(25.0);
    stop.store(true, Ordering::Relaxed);
    let stats = load.join().unwrap();
    eprintln!("SIGTERM under load: {stats:?}, exit {status}");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(
        stats.retried, 0,
        "idle connections get a grace period for the request on its way: {stats:?}"
    );
    assert!(
        stats.answered >= 100,
        "too little load to mean anything: {stats:?}"
    );
}

/// SIGTERM (what a rollout sends) while a request is half-sent: the service stops taking
/// connections, answers that request, and exits 0.
fn sigterm_drains_in_flight_requests(dir: &std::path::Path, args: &[String]) {
    use std::io::{Read, Write};
    let mut server = start_server(dir, args).expect("server starts");
    let body = br#"{"history": ["1", "50"], "clusters": 1}"#;
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /v1/explore HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..10]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.terminate();
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.write_all(&body[10..]).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "in-flight request: {out}");
    let (status, _) = server.wait_exit(15.0);
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// The chaos test: `kill -9` at 20 seeded random moments across `train novelty`, `train
/// alignment`, `train items` and `precompute` (five each, 10-90% of the stage's
/// uninterrupted time after its start); after each kill the stage is run again to its end,
/// and its outputs must be byte-identical to an uninterrupted run's (the manifests'
/// checksums), with no partial folder or checkpoint left behind. Each point starts from the
/// stage's inputs alone, so every kill lands mid-stage. About ten minutes on two cores:
/// `cargo test --release -p wander-cli --test cli -- --ignored --nocapture chaos`.
#[test]
#[ignore = "about ten minutes; run on demand (see the doc comment)"]
fn chaos_kill_nine_at_twenty_points_then_outputs_match_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, chaos) = (tmp.path().join("reference"), tmp.path().join("chaos"));
    let command = |run: &std::path::Path, args: &[&str]| {
        let mut cmd = wander(tmp.path());
        cmd.arg("--json");
        let mut sets = tiny_settings(run);
        // Enough steps and epochs that a kill can land between checkpoints.
        sets.extend(
            [
                "novelty.steps=6",
                "alignment.steps=6",
                "alignment.checkpoint_every=2",
                "items.max_epochs=4",
            ]
            .map(String::from),
        );
        for s in &sets {
            cmd.arg("--set").arg(s);
        }
        cmd.args(args);
        cmd
    };
    let finish = |run: &std::path::Path, args: &[&str]| -> (serde_json::Value, String, f64) {
        let started = std::time::Instant::now();
        let out = run_cmd(command(run, args));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        (json(&out), stderr(&out), started.elapsed().as_secs_f64())
    };
    let inputs = ["ingest", "taxonomy", "transitions", "feedback"];
    for s in inputs {
        finish(&reference, &[s]);
    }
    let stages: [(&[&str], &str); 4] = [
        (&["train", "novelty"], "train_novelty"),
        (&["train", "alignment"], "train_alignment"),
        (&["train", "items"], "train_items"),
        (&["precompute"], "precompute"),
    ];
    let mut seconds = Vec::new();
    for (args, _) in &stages {
        seconds.push(finish(&reference, args).2);
    }
    let outputs = |run: &std::path::Path, folder: &str| -> serde_json::Value {
        let m = std::fs::read(run.join(folder).join("manifest.json")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&m).unwrap()["outputs"].clone()
    };
    let listing = |run: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(run)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let mut rng = 0x5eed_c4a0_5u64;
    let mut uniform = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut killed_mid_stage, mut resumed) = (0, 0);
    for ((args, folder), full) in stages.iter().zip(&seconds) {
        // precompute reads both trained models; the trainers read the four inputs.
        let needed: Vec<&str> = if *folder == "precompute" {
            inputs
                .iter()
                .copied()
                .chain(["train_novelty", "train_alignment"])
                .collect()
        } else {
            inputs.to_vec()
        };
        for _ in 0..5 {
            let _ = std::fs::remove_dir_all(&chaos);
            for s in &needed {
                copy_dir(&reference.join(s), &chaos.join(s));
            }
            let at = full * (0.1 + 0.8 * uniform());
            let mut child = command(&chaos, args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_secs_f64(at));
            let running = child.try_wait().unwrap().is_none();
            child.kill().unwrap_or(()); // SIGKILL
            child.wait().unwrap();
            killed_mid_stage += running as usize;
            let (summary, log, _) = finish(&chaos, args);
            let resume = match summary["resumed_from"].as_u64() {
                Some(n) => format!("resumed from step/epoch {n}"),
                None => log
                    .lines()
                    .find_map(|l| {
                        l.split_once("pairs to do (")
                            .map(|(_, r)| r.split(')').next().unwrap_or("").to_string())
                    })
                    .unwrap_or_default(),
            };
            resumed += (summary["resumed_from"].as_u64().unwrap_or(0) > 0
                || (resume.contains("chunks already done") && !resume.starts_with("0 ")))
                as usize;
            eprintln!(
                "{folder}: killed at {at:.1} of {full:.1} s{}; rerun: {resume}",
                if running {
                    ""
                } else {
                    " (had already finished)"
                }
            );
            assert_eq!(
                outputs(&chaos, folder),
                outputs(&reference, folder),
                "{folder}: outputs differ from the uninterrupted run's after a kill at {at:.1} s"
            );
            let mut expected: Vec<String> = needed.iter().map(|s| s.to_string()).collect();
            expected.push(folder.to_string());
            expected.sort();
            assert_eq!(
                listing(&chaos),
                expected,
                "no partial folder or checkpoint left behind"
            );
        }
    }
    eprintln!(
        "{killed_mid_stage} of 20 kills landed while the stage was running; {resumed} reruns resumed from saved work"
    );
    assert!(
        killed_mid_stage >= 15,
        "too few kills landed mid-stage to mean anything"
    );
}

/// Runs a prepared command, asserting it did not panic.
fn run_cmd(mut cmd: std::process::Command) -> std::process::Output {
    run(&mut cmd)
}
