//! Thread settings for candle on small machines.
//!
//! Measured on the 2-vCPU machines wander targets (see BENCHMARKS.md): candle's spinning
//! barrier pool plus rayon's pool oversubscribe two cores. The binary calls
//! [`configure`] before any tensor work.

/// Sets the default thread environment unless the user set it: rayon gets one thread per
/// core and the barrier pool's spin limit is lowered so idle workers yield the core.
pub fn configure() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100");
    }
}
