//! Supervised fine-tuning (filled in below).
