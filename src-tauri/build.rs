use std::path::Path;

fn main() {
    // `generate_context!` embeds ../ui/dist and fails to compile without it.
    // A workspace-wide `cargo clippy`/`cargo build` should not need npm, so a
    // missing build gets a page that says what to do; scripts/e2e and the demo
    // always run `npm run build` first, which replaces it.
    let dist = Path::new("../ui/dist");
    if !dist.join("index.html").exists() {
        let page = "<!doctype html><meta charset=\"utf-8\"><title>Tessera counter</title>\
            <h1>The screens are not built</h1>\
            <p>Run <code>npm ci &amp;&amp; npm run build</code> in <code>ui/</code>, then rebuild the app.</p>";
        if let Err(e) = std::fs::create_dir_all(dist)
            .and_then(|()| std::fs::write(dist.join("index.html"), page))
        {
            println!("cargo:warning=cannot write a placeholder ui/dist: {e}");
        }
    }
    tauri_build::build()
}
