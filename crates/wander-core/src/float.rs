//! Floats in JSON artifacts: JSON has no NaN, and serde_json writes a non-finite `f64` as
//! `null`; figures that may be undefined (a mean over no events) read `null` back as NaN.

/// `#[serde(deserialize_with = "wander_core::float::nan_if_null")]`: a number, or `null`
/// read as NaN.
pub fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Figure {
        #[serde(deserialize_with = "super::nan_if_null")]
        x: f64,
    }

    #[test]
    fn null_reads_as_nan_and_numbers_as_themselves() {
        let f: Figure = serde_json::from_str(r#"{"x": null}"#).unwrap();
        assert!(f.x.is_nan());
        let f: Figure = serde_json::from_str(r#"{"x": 0.25}"#).unwrap();
        assert_eq!(f.x, 0.25);
        assert!(serde_json::from_str::<Figure>(r#"{"x": "a"}"#).is_err());
    }
}
