//! ember-operator binary entry point.

fn main() {
    eprintln!("ember-operator: controllers are being built (issue 3)");
    std::process::exit(2);
}
