//! Batched evaluation metrics (issue 3), computed with rayon and exact parity
//! with the reference tools: parsing metrics (sklearn RandIndex/ARI, loghub-2.0
//! GA/FGA/PA/PTA/RTA/FTA, LogLM token-level variable F1), binary classification
//! metrics (sklearn), BLEU (sacrebleu 2.6.0), ROUGE (Google rouge-score 0.1.2)
//! and the LLaMA-Factory SFT evaluation variant. Each submodule names its reference.
pub mod bleu;
pub mod classification;
pub mod llamafactory;
pub mod parsing;
pub mod porter;
pub mod rouge;
pub mod util;

pub use classification::{binary_scores, session_labels, session_scores, BinaryScores};
pub use parsing::{adjusted_rand_index, parsing_scores, rand_index, ParsingScores};
