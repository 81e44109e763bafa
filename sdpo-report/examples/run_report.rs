//! Writes the run report of a run directory without the `sdpo` binary (no burn to build):
//! `cargo run -p sdpo-report --example run_report -- RUN_DIR OUT.html`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(run_dir), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: run_report RUN_DIR OUT.html".into());
    };
    sdpo_report::write_run_report(run_dir.as_ref(), out.as_ref())?;
    eprintln!("report written to {out}");
    Ok(())
}
