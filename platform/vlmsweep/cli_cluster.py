"""`vlmsweep submit` and `vlmsweep jobs`: a sweep as a Ray Job on a cluster, and its jobs."""

from __future__ import annotations

import argparse

SUBMIT_HELP = """Submit a grid's sweep to a Ray cluster as a Ray Job (the Jobs API at the cluster's
dashboard, http://HEAD:8265). vlmsweep itself (py_modules), the grid and the files it extends
(working_dir), and what the workers need (MLFLOW_TRACKING_URI, AWS_*, VLMSWEEP_*, quiet
progress) travel in the job's runtime_env. The work dir must be a URI every node reaches
(s3://, gs://) or an absolute path on a shared mount; MLFLOW_TRACKING_URI must be an http(s)://
tracking server. One sweep (grid name + work dir) runs as one job at a time: while an attempt is
pending or running, submit says so and submits nothing; after it ended (driver died, stopped,
failed), submit starts the next attempt with --resume. Token auth: RAY_AUTH_MODE=token and the
cluster's token in RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token."""

JOBS_HELP = """The cluster's Ray Jobs: list (vlmsweep's; --all for every job), status ID, logs ID
[--follow], stop ID. --address is the dashboard (http://HEAD:8265), else $VLMSWEEP_JOBS_ADDRESS,
else $RAY_API_SERVER_ADDRESS. Token auth as for submit."""


def cmd_submit(args) -> int:
    from vlmsweep.cli import grid_of
    from vlmsweep.sweep.submit import submit_sweep

    grid = grid_of(args)           # the grid, --set and --variant checked here, before anything is sent
    sub = submit_sweep(args.config, grid.name, address=args.address, work_dir=args.work_dir, sets=args.set,
                       variant=args.variant, max_concurrent=args.max_concurrent, retries=args.retries)
    logs = f"vlmsweep jobs logs {sub.submission_id} --follow --address {sub.url}"
    if sub.already_running:
        print(f"already running: {sub.submission_id} ({sub.status}) is sweep {grid.name!r} on this work dir; "
              f"nothing submitted\n  logs: {logs}")
        return 0
    print(f"submitted {sub.submission_id} to {sub.url}: sweep {grid.name!r}, attempt {sub.attempt}"
          f"{' (resuming)' if sub.attempt > 1 else ''}\n  logs: {logs}\n"
          f"  status: vlmsweep jobs status {sub.submission_id} --address {sub.url}")
    if args.follow:
        from vlmsweep.sweep.submit import jobs_client, print_logs

        print_logs(jobs_client(args.address), sub.submission_id, sub.url, follow=True)
    return 0


def cmd_jobs(args) -> int:
    from vlmsweep.sweep.submit import (jobs_address, jobs_client, job_info, list_table, print_logs, status_text,
                                       stop_job)

    client = jobs_client(args.address)
    url = jobs_address(args.address)
    if args.jobs_command == "list":
        print(list_table(client, url, every=args.all))
    elif args.jobs_command == "status":
        print(status_text(job_info(client, args.job_id, url)))
    elif args.jobs_command == "logs":
        print_logs(client, args.job_id, url, follow=args.follow)
    elif args.jobs_command == "stop":
        print(f"{args.job_id}: {stop_job(client, args.job_id, url)}")
    return 0


def add_cluster_commands(sub, positive, at_least_zero) -> None:
    """The submit and jobs subcommands; `positive` / `at_least_zero` are the CLI's int types."""
    submit = sub.add_parser("submit", help="submit a grid's sweep to a Ray cluster as a Ray Job",
                            description=SUBMIT_HELP)
    submit.add_argument("config", help="grid YAML (e.g. experiments/smoke.yaml), or a variant YAML")
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one field of every variant, e.g. --set training.steps=20 (repeatable)")
    submit.add_argument("--work-dir", help="where the sweep writes, reached by every node: s3://BUCKET/PREFIX, "
                        "gs://..., or an absolute path on a shared mount (default: $VLMSWEEP_WORK_DIR)")
    submit.add_argument("--address", help="the cluster's dashboard / Jobs API, e.g. http://HEAD:8265 "
                        "(default: $VLMSWEEP_JOBS_ADDRESS, else $RAY_API_SERVER_ADDRESS)")
    submit.add_argument("--variant", help="run only this variant (by its name)")
    submit.add_argument("--max-concurrent", type=positive, help="at most this many stages at once")
    submit.add_argument("--retries", type=at_least_zero, help="retries of a failed stage (default 1)")
    submit.add_argument("--follow", action="store_true", help="then print the job's log as it grows")
    submit.set_defaults(fn=cmd_submit)

    jobs = sub.add_parser("jobs", help="list, inspect, follow and stop the sweeps' Ray Jobs", description=JOBS_HELP)
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)

    def jobs_args(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--address", help="the cluster's dashboard, e.g. http://HEAD:8265 "
                        "(default: $VLMSWEEP_JOBS_ADDRESS, else $RAY_API_SERVER_ADDRESS)")
        sp.set_defaults(fn=cmd_jobs)
        return sp

    jobs_args(jobs_sub.add_parser("list", help="the cluster's vlmsweep jobs")).add_argument(
        "--all", action="store_true", help="every job on the cluster, not only vlmsweep's")
    jobs_args(jobs_sub.add_parser("status", help="a job's status")).add_argument("job_id", help="submission id")
    logs = jobs_args(jobs_sub.add_parser("logs", help="a job's driver log"))
    logs.add_argument("job_id", help="submission id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    jobs_args(jobs_sub.add_parser("stop", help="stop a job (its sweep resumes on the next submit)")).add_argument(
        "job_id", help="submission id")
