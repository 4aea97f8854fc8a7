//! scale-api: the bundled API that the fleet runs (built out in its own issue).

fn main() {
    eprintln!("scale-api: not built yet");
    std::process::exit(1);
}
