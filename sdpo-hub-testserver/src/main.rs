//! `sdpo-hub-testserver --root DIR [--bind 127.0.0.1:PORT] [--url-file FILE] [--token ID=TOKEN]`:
//! serves the repositories under `DIR` with the Hub's file protocol until killed (CI points
//! `HF_ENDPOINT` at it). The URL is printed on stdout and, with `--url-file`, written to `FILE`
//! once the server listens.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut root = None;
    let mut bind = "127.0.0.1:0".to_string();
    let mut url_file = None;
    let mut tokens = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--root", Some(v)) => root = Some(v),
            ("--bind", Some(v)) => bind = v,
            ("--url-file", Some(v)) => url_file = Some(v),
            ("--token", Some(v)) => match v.split_once('=') {
                Some((id, token)) => tokens.push((id.to_string(), token.to_string())),
                None => return usage(&format!("--token `{v}`: expected ID=TOKEN")),
            },
            (other, _) => return usage(&format!("unexpected argument `{other}`")),
        }
    }
    let Some(root) = root else {
        return usage("--root DIR is required");
    };
    let server = match sdpo_hub_testserver::HubServer::bind(&root, &bind) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: cannot listen on {bind}: {err}");
            return ExitCode::FAILURE;
        }
    };
    for (id, token) in &tokens {
        server.require_token(id, token);
    }
    println!("{}", server.url());
    if let Some(file) = url_file
        && let Err(err) = std::fs::write(&file, server.url())
    {
        eprintln!("error: cannot write `{file}`: {err}");
        return ExitCode::FAILURE;
    }
    loop {
        std::thread::park();
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!(
        "error: {problem}\nusage: sdpo-hub-testserver --root DIR [--bind 127.0.0.1:PORT] \
         [--url-file FILE] [--token ID=TOKEN]"
    );
    ExitCode::FAILURE
}
