//! Batched evaluation metrics (issue 3). Placeholder until the metrics land.
