//! ember-runtime: placeholder until the inference server lands (issue 4).
fn main() {}
