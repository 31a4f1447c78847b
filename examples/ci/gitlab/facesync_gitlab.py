#!/usr/bin/env python3
"""GitLab API steps of the facesync pipeline, in the standard library only (no jq, no extra install).

    facesync_gitlab.py note HEADING PLAN.md   create or edit THE plan note of the merge request
    facesync_gitlab.py reviewed-plan DIR      download the merged MR's last successful plan into DIR
    facesync_gitlab.py drift 0|2|3 PLAN.md    open, update or close the issue labelled facesync-drift

It reads GitLab's predefined CI variables and FACESYNC_GITLAB_TOKEN, a project access token with the
`api` scope and the Reporter role (masked, protected if only the default branch needs it). The token is
sent in a header and never printed.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable

MARKER = "<!-- facesync-plan -->"
DRIFT_LABEL = "facesync-drift"
PLAN_JOB = "facesync:plan"
MAX_BODY = 60_000  # GitLab accepts 1,000,000 characters, but a longer note is unreadable: plan.json has all


class GitLabError(Exception):
    """A GitLab API call failed, or a fact the pipeline needs is missing."""


def find_marked(notes: Iterable[dict], marker: str = MARKER) -> dict | None:
    """The note this pipeline wrote before: the first whose body starts with the hidden marker."""
    return next((note for note in notes if note.get("body", "").startswith(marker)), None)


def note_body(plan_markdown: str, heading: str) -> str:
    """The note: marker, heading, then the plan cut to a readable length."""
    plan = plan_markdown if len(plan_markdown) <= MAX_BODY else (
        plan_markdown[:MAX_BODY] + "\n\n_(cut: the whole plan is in the job's plan.json artifact)_\n")
    return f"{MARKER}\n{heading}\n\n{plan}"


def reviewed_pipeline(pipelines: Iterable[dict], head_sha: str) -> dict | None:
    """The newest successful pipeline of the merge request's last reviewed commit."""
    matching = [p for p in pipelines if p.get("sha") == head_sha and p.get("status") == "success"]
    return max(matching, key=lambda p: p["id"], default=None)


class GitLab:
    def __init__(self, api_url: str, project: str, token: str):
        self.base = f"{api_url.rstrip('/')}/projects/{urllib.parse.quote(project, safe='')}"
        self._token = token

    def __repr__(self) -> str:
        return f"GitLab({self.base!r})"

    def call(self, method: str, path: str, data: dict | None = None, *, raw: bool = False):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body, method=method,
                                         headers={"PRIVATE-TOKEN": self._token})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                content = answer.read()
        except urllib.error.HTTPError as error:
            raise GitLabError(f"{method} {path}: HTTP {error.code} {error.reason}") from None
        except urllib.error.URLError as error:
            raise GitLabError(f"{method} {path}: {error.reason}") from None
        return content if raw else json.loads(content or b"null")

    def pages(self, path: str) -> list[dict]:
        joiner = "&" if "?" in path else "?"
        found, page = [], 1
        while True:
            batch = self.call("GET", f"{path}{joiner}per_page=100&page={page}")
            found.extend(batch)
            if len(batch) < 100:
                return found
            page += 1


def upsert_note(gitlab: GitLab, mr_iid: str, body: str) -> str:
    notes = gitlab.pages(f"/merge_requests/{mr_iid}/notes?sort=asc")
    previous = find_marked(notes)
    if previous is not None:
        gitlab.call("PUT", f"/merge_requests/{mr_iid}/notes/{previous['id']}", {"body": body})
        return f"updated note {previous['id']}"
    created = gitlab.call("POST", f"/merge_requests/{mr_iid}/notes", {"body": body})
    return f"created note {created['id']}"


def download_reviewed_plan(gitlab: GitLab, commit_sha: str, out_dir: str) -> str:
    merged = [mr for mr in gitlab.call("GET", f"/repository/commits/{commit_sha}/merge_requests")
              if mr.get("state") == "merged"]
    if not merged:
        raise GitLabError(f"{commit_sha[:8]} was not merged from a merge request: no plan was reviewed")
    mr = merged[0]
    pipeline = reviewed_pipeline(gitlab.pages(f"/merge_requests/{mr['iid']}/pipelines"), mr["sha"])
    if pipeline is None:
        raise GitLabError(f"no successful plan pipeline of !{mr['iid']} at {mr['sha'][:8]}")
    jobs = gitlab.pages(f"/pipelines/{pipeline['id']}/jobs?scope[]=success")
    job = next((j for j in jobs if j["name"] == PLAN_JOB), None)
    if job is None:
        raise GitLabError(f"pipeline {pipeline['id']} of !{mr['iid']} has no successful {PLAN_JOB} job")
    os.makedirs(out_dir, exist_ok=True)
    for name in ("plan.json", "plan.md", "plan-inputs.sha256"):
        content = gitlab.call("GET", f"/jobs/{job['id']}/artifacts/{name}", raw=True)
        with open(os.path.join(out_dir, name), "wb") as out:
            out.write(content)
    return f"the plan reviewed on !{mr['iid']} (job {job['id']})"


def sync_drift_issue(gitlab: GitLab, exit_code: int, plan_markdown: str, job_url: str) -> str:
    opened = gitlab.call("GET", f"/issues?labels={DRIFT_LABEL}&state=opened&per_page=1")
    if exit_code == 0:
        if not opened:
            return "no drift"
        iid = opened[0]["iid"]
        gitlab.call("POST", f"/issues/{iid}/notes", {"body": f"The library matches the manifest again ({job_url})."})
        gitlab.call("PUT", f"/issues/{iid}", {"state_event": "close"})
        return f"closed issue #{iid}"
    warning = ("\n\n**Applying this plan is refused as unsafe** (too many deletes or a protected group): "
               "it needs `--force`." if exit_code == 3 else "")
    description = note_body(plan_markdown, f"The live face library differs from the manifest on the default "
                                           f"branch. Last checked by {job_url}.{warning}")
    if opened:
        gitlab.call("PUT", f"/issues/{opened[0]['iid']}", {"description": description})
        return f"updated issue #{opened[0]['iid']}"
    created = gitlab.call("POST", "/issues", {
        "title": "facesync: the face library has drifted from the manifest",
        "labels": DRIFT_LABEL, "description": description})
    return f"opened issue #{created['iid']}"


def main(argv: list[str]) -> int:
    env = os.environ
    token = env.get("FACESYNC_GITLAB_TOKEN", "")
    if not token:
        print("FACESYNC_GITLAB_TOKEN is not set (a merge request from a fork?): nothing posted.")
        return 0 if argv[:1] == ["note"] else 1
    gitlab = GitLab(env["CI_API_V4_URL"], env.get("CI_MERGE_REQUEST_PROJECT_ID") or env["CI_PROJECT_ID"], token)
    try:
        if argv[:1] == ["note"] and len(argv) == 3:
            with open(argv[2], encoding="utf-8") as plan:
                print(upsert_note(gitlab, env["CI_MERGE_REQUEST_IID"], note_body(plan.read(), argv[1])))
        elif argv[:1] == ["reviewed-plan"] and len(argv) == 2:
            print("Applying", download_reviewed_plan(gitlab, env["CI_COMMIT_SHA"], argv[1]))
        elif argv[:1] == ["drift"] and len(argv) == 3:
            with open(argv[2], encoding="utf-8") as plan:
                print(sync_drift_issue(gitlab, int(argv[1]), plan.read(), env.get("CI_JOB_URL", "")))
        else:
            print(__doc__, file=sys.stderr)
            return 1
    except GitLabError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
