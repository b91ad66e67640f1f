//! Engine specs (`embedded`, `ballista://host:port`) parse or are refused.

use wander_engine::{Embedded, Engine};

fn embedded() -> Embedded {
    Embedded {
        memory_limit: 1 << 28,
        partitions: 2,
        spill_dir: None,
    }
}

#[test]
fn parses_engine_specs() {
    assert_eq!(
        Engine::parse("embedded", embedded()).unwrap(),
        Engine::Embedded(embedded())
    );
    assert_eq!(
        Engine::parse("ballista://127.0.0.1:50050", embedded()).unwrap(),
        Engine::Ballista {
            url: "df://127.0.0.1:50050".into()
        }
    );
    for bad in [
        "",
        "ballista://",
        "ballista://host",
        "ballista://h:port",
        "spark://h:1",
    ] {
        assert!(Engine::parse(bad, embedded()).is_err(), "{bad}");
    }
}
