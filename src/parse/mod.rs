//! Template tree for streaming log parsing (issue 5). Placeholder until the parser lands.
