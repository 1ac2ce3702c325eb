//! ember-runtime: placeholder until the inference server lands (issue 4).

fn main() {
    eprintln!("ember-runtime is not implemented yet");
    std::process::exit(2);
}
