#!/usr/bin/env python3
"""Checks the files under deploy/ against each other and against the pipemesh binary.

Run by scripts/validate-deploy (which provides the tools); prints one PASS/FAIL line per check,
details of a failure indented below it, and exits 1 when any check failed.

The binary is the reference: every flag, environment variable and TOML key that a deploy file
gives to pipemesh must be one the binary accepts (its --help output, and `pipemesh config`
loading each deployment's actual settings). Names being added by colleagues are listed in
deploy/validate/pending.txt and reported as pending while the binary lacks them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import traceback
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OPS = DEPLOY / "OPERATIONS.md"
UNIT = DEPLOY / "systemd" / "pipemesh.service"
UNIT_TOML = DEPLOY / "systemd" / "pipemesh.toml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
HADOLINT_CONFIG = DEPLOY / "docker" / "hadolint.yaml"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"
NODE_INIT = K8S / "node-init.sh"
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"
PENDING = DEPLOY / "validate" / "pending.txt"

# Kubernetes versions the manifests are validated against (oldest supported, newest known).
K8S_VERSIONS = ["1.30.0", "1.37.0"]
# Seconds a node needs after its drain deadline to close sessions and stop.
STOP_MARGIN_SECS = 10
# Stand-ins for values the downward API gives at run time.
K8S_NODE_NAME = "ip-10-0-1-5.eu-west-1.compute.internal"
K8S_HOST_IP = "10.0.1.5"
# Other programs: a comment line naming one of these documents its flags, not pipemesh's.
OTHER_TOOLS = {
    "etcd", "etcdctl", "kubectl", "docker", "curl", "openssl", "systemctl", "systemd-analyze",
    "journalctl", "sed", "tr", "head", "base64", "pip", "cargo", "git", "helm", "install",
    "strip", "useradd", "groupadd", "apt-get", "prometheus",
}


class Failure(Exception):
    """A check failed; args are the lines to print."""


# ---------------------------------------------------------------------------------------------
# Small helpers


def rel(p: Path | str) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def run(argv, *, env=None, cwd=None, timeout=60, check=False):
    proc = subprocess.run(
        [str(a) for a in argv], env=env, cwd=cwd, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    if check and proc.returncode != 0:
        raise Failure(
            f"{' '.join(map(str, argv))} exited {proc.returncode}",
            *(proc.stdout + proc.stderr).strip().splitlines()[-20:],
        )
    return proc


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_all(path: Path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]


def text_files():
    """Every text file under deploy/ except the validation's own."""
    for p in sorted(DEPLOY.rglob("*")):
        if p.is_file() and DEPLOY / "validate" not in p.parents:
            try:
                yield p, p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def logical_lines(text: str):
    """(line number, line) with backslash-continued lines joined."""
    buf, start = "", None
    for n, line in enumerate(text.splitlines(), 1):
        if start is None:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        yield start, buf + line
        buf, start = "", None
    if start is not None:
        yield start, buf


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def parse_timespan(value: str) -> float:
    """A systemd time span ("60s", "1min 30s", "90") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60,
             "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
             "ms": 0.001, "msec": 0.001, "us": 1e-6, "usec": 1e-6}
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        if m.start() != pos or m.group(2) not in units:
            raise ValueError(f"cannot parse time span {value!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(value.rstrip()) or pos == 0:
        raise ValueError(f"cannot parse time span {value!r}")
    return total


def parse_duration(value) -> float:
    """A compose duration ("45s", "1m30s") or Kubernetes-style seconds in seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    units = {"us": 1e-6, "ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", value)
    if not parts or "".join(a + b for a, b in parts) != value:
        raise ValueError(f"cannot parse duration {value!r}")
    return sum(float(a) * units[b] for a, b in parts)


def compose_interpolate(value: str, where: str) -> str:
    """Compose variable interpolation with an empty environment (defaults apply)."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("plain")
        op, arg = m.group("op"), m.group("arg")
        if op in (":?", "?"):
            raise Failure(f"{where}: ${{{name}}} is required ({arg}) and has no default")
        return arg if op in (":-", "-") else ""
    pattern = (r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)"
               r"(?P<arg>[^}]*))?\}|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)")
    return re.sub(pattern, sub, value)


def k8s_expand(value: str, env: dict) -> str:
    """Kubernetes $(VAR) expansion in env values, command and args ($$ escapes)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
                  value)


# ---------------------------------------------------------------------------------------------
# The binary


class Binary:
    """The pipemesh binary's subcommands, flags and environment variables, from --help."""

    def __init__(self, path: Path, tmp: Path):
        self.path = path
        self.tmp = tmp
        top = run([path, "--help"], check=True).stdout
        section = top.split("Commands:", 1)[1].split("\n\n", 1)[0]
        self.subcommands = [ln.split()[0] for ln in section.splitlines()
                            if ln.strip() and ln.split()[0] != "help"]
        self.help = {sc: run([path, sc, "--help"], check=True).stdout for sc in self.subcommands}
        self.version = run([path, "--version"], check=True).stdout.strip()
        self.flags = {
            sc: set(re.findall(r"(?m)^\s+(?:-[A-Za-z0-9], )?(--[a-z0-9][a-z0-9-]*)", text))
            for sc, text in self.help.items()
        }
        self.all_flags = set().union(*self.flags.values())
        self.env = {sc: set(re.findall(r"PIPEMESH_[A-Z0-9_]*[A-Z0-9]", text))
                    for sc, text in self.help.items()}
        self.all_env = set().union(*self.env.values())
        self.pending_flags, self.pending_env = {}, set()
        for line in PENDING.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if words[0].startswith("--"):
                self.pending_flags[words[0]] = len(words) > 1
            else:
                self.pending_env.add(words[0])
        self.pending_seen: set[str] = set()
        self.pending_landed: set[str] = set()
        self.config_sources: dict[str, str] = {}  # temporary copy -> the file it stands for
        self.secret_file = tmp / "dummy-secret"
        self.secret_file.write_text("x" * 48 + "\n")
        self.secret_file.chmod(0o600)

    # Name checks: return None when fine, else the reason.

    def check_flag(self, flag: str, sub: str | None) -> str | None:
        known = self.flags.get(sub, set()) if sub else self.all_flags
        if flag in known:
            if flag in self.pending_flags:
                self.pending_landed.add(flag)
            return None
        if flag in self.pending_flags and sub in (None, "serve", "config"):
            self.pending_seen.add(flag)
            return None
        where = f"pipemesh {sub} --help" if sub else "any pipemesh --help"
        return f"flag {flag} is not in {where}"

    def check_env(self, name: str, serve_only: bool) -> str | None:
        known = self.env["serve"] if serve_only else self.all_env
        if name in known:
            if name in self.pending_env:
                self.pending_landed.add(name)
            return None
        if name in self.pending_env:
            self.pending_seen.add(name)
            return None
        where = "pipemesh serve --help" if serve_only else "any pipemesh --help"
        return f"environment variable {name} is not in {where}"

    def config(self, args: list[str], env: dict, file_map: dict[str, Path], where: str) -> dict:
        """The effective configuration `pipemesh config` prints for these serve arguments and
        environment (nothing else of this process's environment). File-valued secrets point at
        a dummy secret; config files named in file_map are replaced by their deploy/ source."""
        args = list(args)
        out: list[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            name = a.split("=", 1)[0]
            takes_value = "=" not in a and i + 1 < len(args) and not args[i + 1].startswith("--")
            if name in self.pending_flags and name not in self.flags["serve"]:
                i += 2 if (self.pending_flags[name] and "=" not in a) else 1
                continue
            if re.fullmatch(r"--[a-z-]*-(secret|token|password)-file", name):
                out += [name, str(self.secret_file)]
                i += 2 if takes_value else 1
                continue
            if name == "--config":
                value = a.split("=", 1)[1] if "=" in a else args[i + 1]
                out += ["--config", str(self._config_file(value, file_map, where))]
                i += 1 if "=" in a else 2
                continue
            out.append(a)
            i += 1
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for k, v in env.items():
            if re.fullmatch(r"PIPEMESH_[A-Z_]*_(SECRET|TOKEN|PASSWORD)_FILE", k):
                v = str(self.secret_file)
            elif k == "PIPEMESH_CONFIG":
                v = str(self._config_file(v, file_map, where))
            run_env[k] = v
        proc = run([self.path, "config", *out], env=run_env, timeout=30)
        if proc.returncode != 0:
            err = proc.stderr.strip()
            for tmp_path, src in self.config_sources.items():
                err = err.replace(tmp_path, src)
            raise Failure(f"{where}: pipemesh refuses the configuration:",
                          *("  " + ln for ln in err.splitlines()),
                          "  (pipemesh config " + " ".join(shlex.quote(a) for a in out) + ")")
        return tomllib.loads(proc.stdout)

    def _config_file(self, value: str, file_map: dict[str, Path], where: str) -> Path:
        if value not in file_map:
            raise Failure(f"{where}: config file {value} has no source under deploy/")
        src = file_map[value]
        text = re.sub(r'(?m)^(\s*[a-z_]+_(?:secret|token|password)_file\s*=).*$',
                      lambda m: f'{m.group(1)} "{self.secret_file}"', src.read_text())
        dst = self.tmp / f"config-{len(self.config_sources)}.toml"
        dst.write_text(text)
        self.config_sources[str(dst)] = rel(src)
        return dst


# ---------------------------------------------------------------------------------------------
# Reading pipemesh invocations out of text


def _norm(tok: str) -> str:
    return tok.strip("`\"'[](){},.:;")


def scan_invocations(text: str):
    """Yields (line, subcommand, [flags]) for each `pipemesh SUB ...` command in the text: the
    words after SUB up to the end of the command (a shell operator, or the end of an inline
    code span or of a $(...) substitution). Callers ignore subcommands pipemesh does not have,
    which are prose ("one pipemesh node per host")."""
    for n, line in logical_lines(text):
        toks = line.split()
        for i, tok in enumerate(toks):
            if not re.fullmatch(r"(?:[\w./-]*/)?pipemesh", tok.lstrip("`\"'($[")):
                continue
            if i + 1 >= len(toks):
                continue
            sub = _norm(toks[i + 1])
            flags = []
            for rest in toks[i + 2:]:
                if rest.startswith((">", "|", "&", ";", "2>")):
                    break
                m = re.match(r"--[a-z0-9][a-z0-9-]*", rest.lstrip("`\"'[("))
                if m:
                    flags.append(m.group(0))
                if rest.endswith(("`", ";", ")")):
                    break
            yield n, sub, flags


def comment_flags(path: Path, text: str):
    """(line, flag) for bare --flags in comments (continued comment lines joined) that name
    neither pipemesh (its invocations are checked per subcommand) nor another program."""
    if path.suffix == ".md":
        return
    comments = []  # (line, text) with "#" removed; other lines break continuations
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("#") and not s.startswith("#!"):
            comments.append((n, s.lstrip("#")))
        else:
            comments.append((n, None))
    joined, buf, start = [], "", None
    for n, c in comments:
        if c is None:
            if start is not None:
                joined.append((start, buf))
            buf, start = "", None
            continue
        if start is None:
            start = n
        if c.rstrip().endswith("\\"):
            buf += c.rstrip()[:-1] + " "
            continue
        joined.append((start, buf + c))
        buf, start = "", None
    if start is not None:
        joined.append((start, buf))
    for n, s in joined:
        words = {_norm(w) for w in s.split()}
        if "pipemesh" in words or words & OTHER_TOOLS:
            continue
        for m in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9-]*)", s):
            yield n, m.group(1)


def markdown_code(text: str):
    """(line, code, in_block) for fenced code block lines and inline code spans."""
    in_block = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            yield n, line, True
        else:
            for m in re.finditer(r"`([^`]+)`", line):
                yield n, m.group(1), False


# ---------------------------------------------------------------------------------------------
# Parsed deploy files (shared by several checks)


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for n, line in logical_lines(path.read_text()):
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        if s.startswith("["):
            current = sections.setdefault(s.strip("[]"), {})
            continue
        key, _, value = s.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_dockerfile(path: Path):
    """[(line, INSTRUCTION, arguments)] with continuations joined and comments dropped."""
    out = []
    for n, line in logical_lines(path.read_text()):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        word, _, rest = s.partition(" ")
        out.append((n, word.upper(), re.sub(r"\s+", " ", rest.strip())))
    return out


def exec_argv(value: str) -> list[str]:
    """A Dockerfile CMD/ENTRYPOINT/HEALTHCHECK CMD value as argv (exec or shell form)."""
    if value.startswith("["):
        return json.loads(value)
    return ["/bin/sh", "-c", value]


class Context:
    def __init__(self, binary: Binary, tmp: Path, kubectl: str):
        self.bin = binary
        self.tmp = tmp
        self.kubectl = kubectl
        self._rendered = None
        self._node_init_toml = None
        self.effective: dict[str, dict] = {}  # where -> effective config

    def rendered(self) -> list[dict]:
        if self._rendered is None:
            proc = run([self.kubectl, "kustomize", K8S], timeout=60)
            if proc.returncode != 0:
                raise Failure("kubectl kustomize deploy/k8s failed:",
                              *proc.stderr.strip().splitlines())
            (self.tmp / "rendered.yaml").write_text(proc.stdout)
            self._rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return self._rendered

    def find(self, kind: str, name: str | None = None) -> list[dict]:
        return [d for d in self.rendered()
                if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]

    def node_json(self, *, region=True, external=True, annotations=None, pretty=False) -> str:
        labels = {"kubernetes.io/hostname": "ip-10-0-1-5", "kubernetes.io/os": "linux",
                  "pipemesh.io/media": "true"}
        if region:
            labels["topology.kubernetes.io/region"] = "eu-west-1"
            labels["topology.kubernetes.io/zone"] = "eu-west-1a"
        addresses = [{"type": "InternalIP", "address": K8S_HOST_IP}]
        if external:
            addresses.append({"type": "ExternalIP", "address": "203.0.113.5"})
        addresses.append({"type": "Hostname", "address": "ip-10-0-1-5"})
        node = {"kind": "Node", "apiVersion": "v1",
                "metadata": {"name": K8S_NODE_NAME, "labels": labels,
                             "annotations": annotations or {"node.alpha.kubernetes.io/ttl": "0"}},
                "status": {"addresses": addresses}}
        return json.dumps(node, indent=2 if pretty else None,
                          separators=None if pretty else (",", ":"))

    def run_node_init(self, node_json: str, name: str):
        """Runs node-init.sh against a stub API (a curl that prints node_json)."""
        d = self.tmp / f"node-init-{name}"
        (d / "bin").mkdir(parents=True)
        (d / "sa").mkdir()
        (d / "sa" / "token").write_text("token\n")
        (d / "sa" / "ca.crt").write_text("ca\n")
        (d / "node.json").write_text(node_json)
        stub = d / "bin" / "curl"
        stub.write_text('#!/bin/sh\n'
                        'case "$*" in *"/api/v1/nodes/$NODE_NAME"*) ;; *) exit 22 ;; esac\n'
                        'case "$*" in *"Authorization: Bearer token"*) ;; *) exit 22 ;; esac\n'
                        f'cat "{d / "node.json"}"\n')
        stub.chmod(0o755)
        env = {"PATH": f"{d / 'bin'}:/usr/bin:/bin", "NODE_NAME": K8S_NODE_NAME,
               "HOST_IP": K8S_HOST_IP, "SA_DIR": str(d / "sa"), "OUT": str(d / "node.toml"),
               "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
        proc = run(["sh", NODE_INIT], env=env, timeout=20)
        out = d / "node.toml"
        return proc, (out.read_text() if out.exists() else None), out

    def node_init_toml(self) -> Path:
        if self._node_init_toml is None:
            proc, text, out = self.run_node_init(self.node_json(), "default")
            if proc.returncode != 0 or text is None:
                raise Failure("node-init.sh failed on a labelled node:",
                              *proc.stderr.strip().splitlines())
            self._node_init_toml = out
        return self._node_init_toml


# ---------------------------------------------------------------------------------------------
# Checks


CHECKS = []


def check(name):
    def register(fn):
        CHECKS.append((name, fn))
        return fn
    return register


@check("yaml")
def check_yaml(ctx: Context) -> str:
    errors, count = [], 0
    for p in sorted(DEPLOY.rglob("*.y*ml")):
        try:
            count += len(load_yaml_all(p))
        except yaml.YAMLError as e:
            errors.append(f"{rel(p)}: {e}".replace("\n", " "))
    if errors:
        raise Failure(f"{len(errors)} file(s) do not parse", *errors)
    return f"{count} documents parse, no duplicate keys"


@check("names")
def check_names(ctx: Context) -> str:
    b = ctx.bin
    errors: list[str] = []
    flags = envs = 0
    for path, text in text_files():
        for n, line in enumerate(text.splitlines(), 1):
            for m in re.finditer(r"PIPEMESH_[A-Z0-9_]*[A-Z0-9]", line):
                envs += 1
                if (err := b.check_env(m.group(0), serve_only=False)):
                    errors.append(f"{rel(path)}:{n}: {err}")
        for n, sub, fl in scan_invocations(text):
            if sub not in b.subcommands:
                continue
            for f in fl:
                flags += 1
                if (err := b.check_flag(f, sub)):
                    errors.append(f"{rel(path)}:{n}: {err}")
        for n, f in comment_flags(path, text):
            flags += 1
            if (err := b.check_flag(f, None)):
                errors.append(f"{rel(path)}:{n}: {err}")
    # Arguments handed to the node by the deployment files themselves.
    for where, sub, args, env in serve_invocations(ctx):
        if sub not in b.subcommands:
            errors.append(f"{where}: pipemesh has no subcommand {sub!r}")
            continue
        for a in args:
            if a.startswith("--"):
                flags += 1
                if (err := b.check_flag(a.split("=", 1)[0], sub)):
                    errors.append(f"{where}: {err}")
        for k in env:
            if k.startswith("PIPEMESH_"):
                envs += 1
                if (err := b.check_env(k, serve_only=True)):
                    errors.append(f"{where}: {err}")
    if errors:
        raise Failure(f"{len(errors)} name(s) unknown to {b.version}", *errors)
    detail = f"{flags} flag and {envs} variable uses are known to {b.version}"
    if b.pending_seen:
        detail += f" (pending, not in this binary yet: {', '.join(sorted(b.pending_seen))})"
    if b.pending_landed:
        detail += (f" (now in the binary, remove from deploy/validate/pending.txt: "
                   f"{', '.join(sorted(b.pending_landed))})")
    return detail


def serve_invocations(ctx: Context):
    """(where, subcommand, args, env) for each pipemesh process a deploy file starts directly."""
    # systemd
    svc = parse_unit(UNIT)["Service"]
    argv = shlex.split(svc["ExecStart"][0].lstrip("-@+!:"))
    env = dict(kv.split("=", 1) for e in svc.get("Environment", []) for kv in shlex.split(e))
    yield rel(UNIT) + " ExecStart", argv[1], argv[2:], env
    # Dockerfile
    instr = parse_dockerfile(DOCKERFILE)
    final = instr[max(k for k, i in enumerate(instr) if i[1] == "FROM"):]  # the runtime stage
    env = {}
    for _, word, rest in final:
        if word == "ENV":
            for kv in shlex.split(rest):
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    env[k] = v
    cmd = [exec_argv(r) for _, w, r in final if w == "CMD"]
    if cmd:
        yield rel(DOCKERFILE) + " CMD", cmd[-1][0], cmd[-1][1:], env
    # compose
    doc = load_yaml_all(COMPOSE)[0]
    for name, s in doc["services"].items():
        if not str(s.get("image", "")).startswith("pipemesh") or "entrypoint" in s:
            continue
        c = s.get("command", ["serve"])
        argv = shlex.split(c) if isinstance(c, str) else list(c)
        yield f"{rel(COMPOSE)} service {name}", argv[0], argv[1:], compose_env(s, name)
    # Kubernetes
    for ds in ctx.find("DaemonSet"):
        for c in ds["spec"]["template"]["spec"]["containers"]:
            if c["image"].split(":")[0].split("/")[-1] == "pipemesh" and "command" not in c:
                env = k8s_env(ctx, c)
                args = [k8s_expand(a, env) for a in c.get("args", ["serve"])]
                yield f"deploy/k8s DaemonSet {ds['metadata']['name']} container {c['name']}", \
                    args[0], args[1:], env


def compose_env(service: dict, name: str) -> dict:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {k: compose_interpolate(str(v), f"compose service {name} {k}") for k, v in raw.items()}


def k8s_env(ctx: Context, container: dict) -> dict:
    """A container's environment as Kubernetes would give it (downward API stand-ins)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            cms = ctx.find("ConfigMap", src["configMapRef"]["name"])
            if not cms:
                raise Failure(f"container {container['name']}: no ConfigMap "
                              f"{src['configMapRef']['name']}")
            env.update({src.get("prefix", "") + k: v for k, v in cms[0].get("data", {}).items()})
    field_values = {"spec.nodeName": K8S_NODE_NAME, "status.hostIP": K8S_HOST_IP,
                    "status.podIP": K8S_HOST_IP, "metadata.name": "pipemesh-x7k2q",
                    "metadata.namespace": "pipemesh"}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = k8s_expand(str(e["value"]), env)
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = field_values[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[e["name"]] = "from-a-secret-or-resource"
    return env


@check("systemd-verify")
def check_systemd_verify(ctx: Context) -> str:
    if not shutil.which("systemd-analyze"):
        raise Failure("systemd-analyze is not installed")
    d = ctx.tmp / "systemd"
    d.mkdir()
    unit = d / UNIT.name
    text = UNIT.read_text()
    # verify wants ExecStart's program to exist: point it at the binary under test.
    text, n = re.subn(r"(?m)^(ExecStart=[-@+!:]*)\S*pipemesh\b", rf"\g<1>{ctx.bin.path}", text)
    if n != 1:
        raise Failure("ExecStart= does not start pipemesh")
    unit.write_text(text)
    proc = run(["systemd-analyze", "verify", "--man=no", unit], timeout=60)
    out = (proc.stdout + proc.stderr).strip()
    # verify exits 0 on unknown keys and bad values (only a warning line): any output fails.
    if proc.returncode != 0 or out:
        raise Failure(f"systemd-analyze verify (exit {proc.returncode}):",
                      *out.replace(str(unit), rel(UNIT)).splitlines())
    return f"no warnings (verified a copy whose ExecStart runs {rel(ctx.bin.path)})"


@check("systemd-hardening")
def check_systemd_hardening(ctx: Context) -> str:
    svc = parse_unit(UNIT)["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    problems = []

    def want(key, ok, expect):
        if not ok(one.get(key)):
            problems.append(f"{key}={one.get(key, '(unset)')}: want {expect}")

    yes = lambda v: v in ("yes", "true", "1", "on")  # noqa: E731
    if not yes(one.get("DynamicUser")) and one.get("User", "root") in ("root", "0"):
        problems.append("neither DynamicUser=yes nor a non-root User=")
    want("ProtectSystem", lambda v: v == "strict", "strict")
    want("ProtectHome", lambda v: v in ("yes", "read-only", "tmpfs"), "yes")
    for key in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectControlGroups", "RestrictNamespaces",
                "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute"):
        want(key, yes, "yes")
    families = set(one.get("RestrictAddressFamilies", "").split())
    need = {"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"}
    if families != need:
        problems.append(f"RestrictAddressFamilies={' '.join(sorted(families))}: want exactly "
                        f"{' '.join(sorted(need))} (AF_NETLINK: interface addresses, AF_UNIX: NSS)")
    want("SystemCallFilter", lambda v: v is not None, "a filter (@system-service)")
    want("KillSignal", lambda v: v in (None, "SIGTERM", "TERM", "15"), "SIGTERM (the node drains on it)")
    want("LimitNOFILE", lambda v: v is not None and (v == "infinity" or int(v.split(":")[-1]) >= 65536),
         ">= 65536")
    # Privileged ports and the stop timeout follow from the node's effective configuration.
    cfg = effective_systemd(ctx)
    ports = [port_of(cfg[k]) for k in ("signaling_listen", "rtc_listen", "admin_listen",
                                       "pipe_listen") if k in cfg]
    caps = set(one.get("CapabilityBoundingSet", "").split())
    wanted_caps = {"CAP_NET_BIND_SERVICE"} if min(ports) < 1024 else set()
    if caps != wanted_caps:
        problems.append(f"CapabilityBoundingSet={' '.join(sorted(caps))}: want "
                        f"{' '.join(sorted(wanted_caps)) or '(empty)'} for ports {sorted(ports)}")
    drain = cfg["drain_deadline_secs"]
    stop = parse_timespan(one.get("TimeoutStopSec", "90s"))
    if stop < drain + STOP_MARGIN_SECS:
        problems.append(f"TimeoutStopSec={stop:g}s: want >= drain_deadline_secs {drain} + "
                        f"{STOP_MARGIN_SECS} s, or SIGKILL cuts the drain short")
    if problems:
        raise Failure(f"{len(problems)} hardening setting(s) missing or wrong", *problems)
    return (f"sandboxed, no capabilities, TimeoutStopSec {stop:g}s > drain "
            f"{drain}s + {STOP_MARGIN_SECS}s")


def effective_systemd(ctx: Context) -> dict:
    if "systemd" not in ctx.effective:
        svc = parse_unit(UNIT)["Service"]
        cred = ctx.tmp / "credentials"
        cred.mkdir(exist_ok=True)
        line = svc["ExecStart"][0].lstrip("-@+!:").replace("${CREDENTIALS_DIRECTORY}", str(cred))
        argv = shlex.split(line)
        creds = {v.split(":", 1)[0] for v in svc.get("LoadCredential", [])}
        for a in argv:
            if a.startswith(str(cred) + "/") and Path(a).name not in creds:
                raise Failure(f"ExecStart uses credential {Path(a).name} that no LoadCredential= loads")
        env = dict(kv.split("=", 1) for e in svc.get("Environment", []) for kv in shlex.split(e))
        ctx.effective["systemd"] = ctx.bin.config(
            argv[2:], env, {"/etc/pipemesh/pipemesh.toml": UNIT_TOML}, rel(UNIT))
    return ctx.effective["systemd"]


@check("systemd-config")
def check_systemd_config(ctx: Context) -> str:
    cfg = effective_systemd(ctx)
    problems = []
    if not cfg.get("etcd_endpoints"):
        problems.append("no etcd_endpoints: a production node joins the cluster through etcd")
    if cfg.get("insecure_pipes"):
        problems.append("insecure_pipes is on")
    if not str(cfg.get("auth_secret_file", "")):
        problems.append("no auth_secret_file: anonymous joins from loopback only")
    if problems:
        raise Failure("the unit's configuration is not production-ready", *problems)
    return (f"pipemesh config accepts ExecStart + {rel(UNIT_TOML)} (node {cfg['node_id']}, "
            f"region {cfg['region']})")


@check("systemd-security")
def check_systemd_security(ctx: Context) -> str:
    d = ctx.tmp / "systemd-security"
    d.mkdir()
    unit = d / UNIT.name
    unit.write_text(re.sub(r"(?m)^(ExecStart=)\S+", rf"\g<1>{ctx.bin.path}", UNIT.read_text()))
    proc = run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit], timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+ \w+)", proc.stdout)
    if not m:
        raise Failure("systemd-analyze security printed no exposure level",
                      *(proc.stdout + proc.stderr).strip().splitlines()[-5:])
    return f"exposure {m.group(1)} (informational; 0 is fully sandboxed, 10 is not at all)"


@check("dockerfile")
def check_dockerfile(ctx: Context) -> str:
    instr = parse_dockerfile(DOCKERFILE)
    problems = []
    froms = [(k, r) for k, (_, w, r) in enumerate(instr) if w == "FROM"]
    if len(froms) < 2:
        problems.append("not a multi-stage build (one FROM)")
    stages = {}
    for _, r in froms:
        parts = r.split()
        image = [p for p in parts if not p.startswith("--")][0]
        if ":" not in image.split("/")[-1] or image.endswith(":latest"):
            problems.append(f"base image {image} is not pinned to a release tag")
        if "AS" in [p.upper() for p in parts]:
            stages[parts[-1]] = image
    final_start = froms[-1][0]
    final = instr[final_start:]
    final_image = froms[-1][1].split()[0]
    if final_image.startswith("rust:"):
        problems.append("the runtime stage is the Rust toolchain image")
    copies = [r for _, w, r in final if w == "COPY"]
    if not any(re.search(r"--from=(\S+)", c) and re.search(r"--from=(\S+)", c).group(1) in stages
               for c in copies):
        problems.append("the runtime stage copies nothing from the build stage")
    users = [r for _, w, r in final if w == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append(f"USER {users[-1] if users else '(none)'}: want a numeric non-root uid "
                        "(Kubernetes runAsNonRoot can only check numbers)")
    entry = [exec_argv(r) for _, w, r in final if w == "ENTRYPOINT"]
    if not entry or not entry[-1][0].endswith("/pipemesh"):
        problems.append("ENTRYPOINT is not the pipemesh binary")
    stop = [r for _, w, r in final if w == "STOPSIGNAL"]
    if stop and stop[-1] not in ("SIGTERM", "15"):
        problems.append(f"STOPSIGNAL {stop[-1]}: the node drains on SIGTERM")
    # Ports and health check against the node's defaults under the image's environment.
    env = {}
    for _, w, r in final:
        if w == "ENV":
            env.update(kv.split("=", 1) for kv in shlex.split(r) if "=" in kv)
    cfg = ctx.bin.config(["--node-id", "image"], env, {}, rel(DOCKERFILE))
    sig, rtc, admin = (port_of(cfg[k]) for k in ("signaling_listen", "rtc_listen", "admin_listen"))
    pipe = port_of(effective_systemd(ctx)["pipe_listen"])
    want = {f"{sig}/tcp", f"{rtc}/udp", f"{rtc}/tcp", f"{pipe}/udp", f"{admin}/tcp"}
    exposed = {p if "/" in p else p + "/tcp" for _, w, r in final if w == "EXPOSE" for p in r.split()}
    if exposed != want:
        problems.append(f"EXPOSE {' '.join(sorted(exposed))}: want {' '.join(sorted(want))} "
                        "(signaling, media UDP+TCP, pipes, admin)")
    hc = [r for _, w, r in final if w == "HEALTHCHECK"]
    if not hc or f":{admin}/healthz" not in hc[-1]:
        problems.append(f"HEALTHCHECK does not query /healthz on the admin port {admin}")
    # Rust toolchain of the build stage against what the locked crates need.
    rust = [img for img in stages.values() if img.startswith("rust:")]
    need, who = required_rust()
    if not rust:
        problems.append("no rust:<version> build stage")
    else:
        m = re.match(r"rust:(\d+)\.(\d+)", rust[0])
        have = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        if have < need:
            problems.append(f"{rust[0]} is older than Rust {need[0]}.{need[1]}, needed by {who}")
    if problems:
        raise Failure(f"{len(problems)} problem(s) in {rel(DOCKERFILE)}", *problems)
    return (f"{len(froms)} stages ({final_image} runtime, user {users[-1]}), EXPOSE "
            f"{' '.join(sorted(exposed))}, HEALTHCHECK /healthz; {rust[0]} >= Rust "
            f"{need[0]}.{need[1]} ({who})")


def required_rust() -> tuple[tuple[int, int], str]:
    """The newest rust-version among Cargo.toml and the locked crates whose sources are here."""
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    best, who = (0, 0), "nothing"
    rv = manifest.get("package", {}).get("rust-version")
    if rv:
        best, who = tuple(map(int, rv.split(".")[:2])), "Cargo.toml"
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    registry = list((cargo_home / "registry" / "src").glob("*"))
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    for pkg in lock.get("package", []):
        if "registry" not in pkg.get("source", ""):
            continue
        for reg in registry:
            f = reg / f"{pkg['name']}-{pkg['version']}" / "Cargo.toml"
            if f.exists():
                try:
                    v = tomllib.loads(f.read_text()).get("package", {}).get("rust-version")
                except tomllib.TOMLDecodeError:
                    v = None
                if isinstance(v, str):
                    t = tuple(map(int, v.split(".")[:2]))
                    if t > best:
                        best, who = t, f"{pkg['name']} {pkg['version']}"
                break
    return best, who


@check("docker-context")
def check_docker_context(ctx: Context) -> str:
    """The build stage's COPY sources exist, pass Dockerfile.dockerignore, and are enough for
    cargo to load the package (declared bench targets need their files, for instance)."""
    instr = parse_dockerfile(DOCKERFILE)
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]

    def sent(path: str) -> bool:
        keep = True
        for p in patterns:
            neg = p.startswith("!")
            pat = p.lstrip("!")
            rx = re.escape(pat).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
            if re.fullmatch(rx, path) or (pat.endswith("/**") and path.startswith(pat[:-3] + "/")):
                keep = neg
        return keep

    sources = []
    for _, w, r in instr:
        if w == "COPY" and "--from=" not in r:
            sources += [s.rstrip("/") for s in shlex.split(r)[:-1] if not s.startswith("--")]
    problems = []
    stage = ctx.tmp / "docker-context"
    for s in sources:
        src = ROOT / s
        if not src.exists():
            problems.append(f"COPY {s}: no such path in the repository")
            continue
        files = [src] if src.is_file() else [f for f in src.rglob("*") if f.is_file()]
        for f in files:
            r = f.relative_to(ROOT).as_posix()
            if not sent(r):
                problems.append(f"COPY {s}: {r} is excluded by {rel(DOCKERIGNORE)}")
                break
            (stage / r).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, stage / r)
    if not problems:
        proc = run(["cargo", "metadata", "--offline", "--no-deps", "--format-version", "1"],
                   cwd=stage, timeout=60)
        if proc.returncode != 0:
            problems.append("cargo cannot load the package from the copied files:")
            problems += ["  " + ln for ln in proc.stderr.strip().splitlines()[-5:]]
    if problems:
        raise Failure("the image's build context is incomplete", *problems)
    return f"COPY {' '.join(sources)} pass the dockerignore; cargo loads the package from them"


@check("hadolint")
def check_hadolint(ctx: Context) -> str:
    exe = shutil.which("hadolint")
    if not exe:
        raise Failure("hadolint is not installed")
    proc = run([exe, "--no-color", "--config", HADOLINT_CONFIG, DOCKERFILE], timeout=60)
    if proc.returncode != 0:
        raise Failure("hadolint found problems", *(proc.stdout + proc.stderr).strip().splitlines())
    version = run([exe, "--version"]).stdout.strip().split()[-1]
    return f"hadolint {version}: clean (ignoring DL3008, see {rel(HADOLINT_CONFIG)})"


@check("compose-schema")
def check_compose_schema(ctx: Context) -> str:
    import jsonschema
    import importlib.util
    # The file only: importing check_jsonschema would need its (uninstalled) dependencies.
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or not spec.submodule_search_locations:
        raise Failure("check-jsonschema (for its compose-spec schema) is not installed")
    schema_path = (Path(spec.submodule_search_locations[0]) / "builtin_schemas" / "vendor"
                   / "compose-spec.json")
    schema = json.loads(schema_path.read_text())
    doc = load_yaml_all(COMPOSE)[0]
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise Failure(f"{rel(COMPOSE)} does not follow the compose specification",
                      *(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                        for e in errors))
    return f"{rel(COMPOSE)} validates against the compose-spec JSON schema"


@check("compose-cluster")
def check_compose_cluster(ctx: Context) -> str:
    doc = load_yaml_all(COMPOSE)[0]
    services = doc["services"]
    problems = []
    etcd = [n for n, s in services.items() if "etcd" in str(s.get("image", "")).split("/")[-1]]
    if not etcd:
        problems.append("no etcd service")
    for n in etcd:
        tag = str(services[n]["image"]).rsplit(":", 1)
        if len(tag) < 2 or not re.fullmatch(r"v?\d+\.\d+\.\d+", tag[1]):
            problems.append(f"etcd image {services[n]['image']} is not pinned to a version tag")
    # The one-shot certificate service, and the node ids it issues certificates for.
    issued, certs_services = set(), []
    for n, s in services.items():
        cmd = s.get("command", [])
        script = "\n".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)
        for line in script.splitlines():
            words = line.split()
            if len(words) > 1 and words[0].endswith("pipemesh") and words[1] == "certs":
                certs_services.append(n)
                it = iter(words[2:])
                for w in it:
                    if w.startswith("--"):
                        if "=" not in w and w != "--force":
                            next(it, None)  # the flag's value
                    else:
                        issued.add(w)
    if not certs_services:
        problems.append("no one-shot service runs `pipemesh certs`")
    nodes = {}
    for name, s in services.items():
        if not str(s.get("image", "")).startswith("pipemesh") or "entrypoint" in s:
            continue
        env = compose_env(s, name)
        c = s.get("command", ["serve"])
        argv = shlex.split(c) if isinstance(c, str) else list(c)
        cfg = ctx.bin.config(argv[1:], env, {}, f"compose service {name}")
        nodes[name] = cfg
        where = f"service {name}"
        deps = s.get("depends_on", {})
        for n in etcd:
            if deps.get(n, {}).get("condition") != "service_healthy":
                problems.append(f"{where}: does not wait for {n} to be healthy")
        for n in certs_services:
            if deps.get(n, {}).get("condition") != "service_completed_successfully":
                problems.append(f"{where}: does not wait for {n} to complete")
        if cfg["node_id"] not in issued:
            problems.append(f"{where}: node {cfg['node_id']} gets no certificate from `pipemesh certs`")
        if not cfg.get("node_cert", "").endswith(f"/{cfg['node_id']}.pem"):
            problems.append(f"{where}: node_cert {cfg.get('node_cert')} is not {cfg['node_id']}.pem")
        for e in cfg.get("etcd_endpoints", []):
            host = re.sub(r"^https?://", "", e).rsplit(":", 1)[0]
            if host not in services:
                problems.append(f"{where}: etcd endpoint {e} names no service")
        pipe = cfg.get("pipe_announced_address", "")
        if pipe.rsplit(":", 1)[0] != name or port_of(pipe) != port_of(cfg["pipe_listen"]):
            problems.append(f"{where}: pipe_announced_address {pipe} is not {name}:<pipe port>")
        published = set()
        for p in s.get("ports", []):
            m = re.fullmatch(r"(?:([\d.]+):)?(\d+):(\d+)(?:/(tcp|udp))?", str(p))
            if not m:
                problems.append(f"{where}: cannot read port {p}")
                continue
            published.add((int(m.group(2)), int(m.group(3)), m.group(4) or "tcp"))
        sig, rtc, admin = (port_of(cfg[k]) for k in ("signaling_listen", "rtc_listen", "admin_listen"))
        # ICE candidates and the signaling URL carry the port the node binds: publish it 1:1.
        for port, proto, what in ((sig, "tcp", "signaling"), (rtc, "udp", "media"),
                                  (rtc, "tcp", "media (ICE-TCP)")):
            if (port, port, proto) not in published:
                problems.append(f"{where}: {what} port {port}/{proto} is not published as {port}:{port}")
        if not any(c == admin and pr == "tcp" for _, c, pr in published):
            problems.append(f"{where}: admin port {admin} is not published")
        if cfg["admin_listen"].startswith("127.0.0.1"):
            problems.append(f"{where}: admin listens on loopback only: unreachable from the host")
        grace = parse_duration(s.get("stop_grace_period", "10s"))
        if grace < cfg["drain_deadline_secs"] + STOP_MARGIN_SECS:
            problems.append(f"{where}: stop_grace_period {grace:g}s < drain_deadline_secs "
                            f"{cfg['drain_deadline_secs']} + {STOP_MARGIN_SECS}")
        for k in env:
            if k in ("PIPEMESH_AUTH_SECRET", "PIPEMESH_ADMIN_TOKEN", "PIPEMESH_ETCD_PASSWORD"):
                problems.append(f"{where}: secret {k} given as a value; use a file")
    ids = [c["node_id"] for c in nodes.values()]
    if len(set(ids)) != len(ids):
        problems.append(f"node ids are not unique: {ids}")
    regions = {}
    for name, c in nodes.items():
        regions.setdefault(c["region"], []).append(name)
    if len(nodes) < 3 or len(regions) < 2:
        problems.append(f"want at least three nodes in two regions, have {regions}")
    host_ports = [(h, pr) for s in services.values() for p in s.get("ports", [])
                  for _, h, _, pr in [re.fullmatch(r"(?:([\d.]+):)?(\d+):(\d+)(?:/(tcp|udp))?",
                                                   str(p)).groups()]]
    dup = {x for x in host_ports if host_ports.count(x) > 1}
    if dup:
        problems.append(f"host ports published twice: {sorted(dup)}")
    if problems:
        raise Failure(f"{len(problems)} problem(s) in {rel(COMPOSE)}", *problems)
    layout = ", ".join(f"{r}: {' '.join(sorted(ns))}" for r, ns in sorted(regions.items()))
    return (f"etcd + {', '.join(certs_services)} + {len(nodes)} nodes ({layout}); pipemesh "
            "config accepts each node's settings; ports published 1:1")


@check("k8s-render")
def check_k8s_render(ctx: Context) -> str:
    docs = ctx.rendered()
    kinds = sorted({d["kind"] for d in docs})
    return f"kubectl kustomize deploy/k8s: {len(docs)} objects ({', '.join(kinds)})"


@check("k8s-schema")
def check_k8s_schema(ctx: Context) -> str:
    ctx.rendered()
    exe = shutil.which("kubernetes-validate")
    if not exe:
        raise Failure("kubernetes-validate is not installed")
    problems = []
    for v in K8S_VERSIONS:
        proc = run([exe, "-k", v, "--strict", "--quiet", ctx.tmp / "rendered.yaml",
                    SECRETS_EXAMPLE], timeout=120)
        if proc.returncode != 0:
            problems += [ln.replace(str(ctx.tmp / "rendered.yaml"), "kustomize output")
                         for ln in (proc.stdout + proc.stderr).strip().splitlines()]
    if problems:
        raise Failure("Kubernetes schema validation failed (strict)", *problems)
    return (f"kustomize output + {SECRETS_EXAMPLE.name} valid (strict) for Kubernetes "
            f"{' and '.join(v.rsplit('.', 1)[0] for v in K8S_VERSIONS)}")


@check("k8s-node-init")
def check_k8s_node_init(ctx: Context) -> str:
    problems = []
    cases = [
        ("labelled, ExternalIP", ctx.node_json(), 0,
         {"region": "eu-west-1", "announced_address": "203.0.113.5"}),
        ("pretty JSON, annotations", ctx.node_json(pretty=True, annotations={
            "pipemesh.io/announced-address": "198.51.100.7",
            "pipemesh.io/signaling-url": "wss://media-1.example.com"}), 0,
         {"region": "eu-west-1", "announced_address": "198.51.100.7",
          "signaling_url": "wss://media-1.example.com"}),
        ("no ExternalIP", ctx.node_json(external=False), 0,
         {"region": "eu-west-1", "announced_address": K8S_HOST_IP}),
        ("no region label", ctx.node_json(region=False), 1, None),
        ("bad signaling URL", ctx.node_json(annotations={"pipemesh.io/signaling-url": "http://x"}),
         1, None),
    ]
    for i, (name, node, rc, want) in enumerate(cases):
        proc, text, out = ctx.run_node_init(node, f"case{i}")
        if (proc.returncode != 0) != bool(rc):
            problems.append(f"{name}: exit {proc.returncode}, want {'failure' if rc else 0}: "
                            f"{proc.stderr.strip()}")
            continue
        if want is None:
            continue
        got = tomllib.loads(text)
        if got != want:
            problems.append(f"{name}: wrote {got}, want {want}")
            continue
    if problems:
        raise Failure(f"{rel(NODE_INIT)} misbehaves against a stub API", *problems)
    return f"{len(cases)} cases against a stub API: region, announced address, signaling URL, refusals"


@check("k8s-workloads")
def check_k8s_workloads(ctx: Context) -> str:
    problems = []
    dss = [d for d in ctx.find("DaemonSet")]
    if len(dss) != 1:
        raise Failure(f"want one pipemesh DaemonSet, found {len(dss)}")
    ds = dss[0]
    spec = ds["spec"]["template"]["spec"]
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    where = f"DaemonSet {ds['metadata']['name']}"
    if not spec.get("hostNetwork"):
        problems.append(f"{where}: hostNetwork is off: media ports must be the host's")
    if spec.get("dnsPolicy") != "ClusterFirstWithHostNet":
        problems.append(f"{where}: dnsPolicy must be ClusterFirstWithHostNet to resolve etcd")
    strategy = ds["spec"].get("updateStrategy", {})
    surge = str(strategy.get("rollingUpdate", {}).get("maxSurge", 0))
    if strategy.get("type", "RollingUpdate") == "RollingUpdate" and surge not in ("0", "0%"):
        problems.append(f"{where}: maxSurge {surge}: the host's ports allow one pod per host")
    containers = [c for c in spec["containers"]
                  if c["image"].split(":")[0].split("/")[-1] == "pipemesh"]
    if len(containers) != 1:
        raise Failure(f"{where}: want one pipemesh container")
    c = containers[0]
    env = k8s_env(ctx, c)
    # NODE_ID from the downward API.
    raw_env = {e["name"]: e for e in c.get("env", [])}
    node_id_src = raw_env.get("PIPEMESH_NODE_ID", {})
    ok = node_id_src.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName"
    if not ok and "value" in node_id_src:
        ref = re.fullmatch(r"\$\((\w+)\)", node_id_src["value"])
        ok = bool(ref) and raw_env.get(ref.group(1), {}).get("valueFrom", {}).get(
            "fieldRef", {}).get("fieldPath") == "spec.nodeName"
    if not ok:
        problems.append(f"{where}: PIPEMESH_NODE_ID does not come from spec.nodeName")
    # The effective configuration, with node-init's output as the --config file.
    args = [k8s_expand(a, env) for a in c.get("args", ["serve"])]
    cfg = ctx.bin.config(args[1:], env, {env.get("PIPEMESH_CONFIG", ""): ctx.node_init_toml()},
                         where)
    ctx.effective["k8s"] = cfg
    if cfg["node_id"] != K8S_NODE_NAME:
        problems.append(f"{where}: node id {cfg['node_id']} is not the Kubernetes node name")
    # Declared ports = what the node binds.
    sig, rtc, pipe, admin = (port_of(cfg[k]) for k in
                             ("signaling_listen", "rtc_listen", "pipe_listen", "admin_listen"))
    want = {(sig, "TCP"), (rtc, "UDP"), (rtc, "TCP"), (pipe, "UDP"), (admin, "TCP")}
    ports = c.get("ports", [])
    have = {(p["containerPort"], p.get("protocol", "TCP")) for p in ports}
    if have != want:
        problems.append(f"{where}: container ports {sorted(have)}, want {sorted(want)} "
                        "(signaling, media UDP+TCP, pipe, admin)")
    for p in ports:
        if p.get("hostPort", p["containerPort"]) != p["containerPort"]:
            problems.append(f"{where}: port {p.get('name')} hostPort differs from containerPort")
    by_name = {p.get("name"): p["containerPort"] for p in ports}

    def probe(kind, path):
        pr = c.get(kind)
        if not pr or "httpGet" not in pr:
            problems.append(f"{where}: no {kind} (httpGet {path})")
            return
        g = pr["httpGet"]
        port = by_name.get(g["port"], g["port"])
        if g.get("path") != path or port != admin:
            problems.append(f"{where}: {kind} is {g.get('path')} on {g['port']}, want {path} on "
                            f"the admin port {admin}")
    probe("livenessProbe", "/healthz")
    probe("readinessProbe", "/readyz")
    if "startupProbe" in c:
        probe("startupProbe", "/healthz")
    if cfg["admin_listen"].startswith("127."):
        problems.append(f"{where}: admin listens on loopback: the kubelet's probes cannot reach it")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = 0
    hook = c.get("lifecycle", {}).get("preStop", {})
    if hook.get("sleep"):
        pre_stop = hook["sleep"]["seconds"]
    if grace < cfg["drain_deadline_secs"] + pre_stop + STOP_MARGIN_SECS:
        problems.append(f"{where}: terminationGracePeriodSeconds {grace} < drain_deadline_secs "
                        f"{cfg['drain_deadline_secs']} + preStop {pre_stop} + {STOP_MARGIN_SECS}")
    # Secrets: mounted files that the settings name, and their keys in the example Secrets.
    examples = {d["metadata"]["name"]: d for d in load_yaml_all(SECRETS_EXAMPLE)}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    file_settings = {k: cfg[k] for k in ("cluster_ca", "node_cert", "node_key", "auth_secret_file")
                     if k in cfg}
    for i, a in enumerate(args):
        if a.endswith("-file") and i + 1 < len(args):
            file_settings[a] = args[i + 1]
    for setting, path in file_settings.items():
        mount = next((m for m in mounts if path.startswith(m.rstrip("/") + "/")), None)
        if mount is None:
            problems.append(f"{where}: {setting} {path} is on no mounted volume")
            continue
        vol = volumes[mounts[mount]]
        key = path[len(mount.rstrip("/")) + 1:]
        if "secret" in vol:
            name = vol["secret"]["secretName"]
            if name not in examples:
                problems.append(f"{where}: Secret {name} is not in {SECRETS_EXAMPLE.name}")
            elif key not in examples[name].get("stringData", examples[name].get("data", {})):
                problems.append(f"{where}: {setting}: key {key} is not in Secret {name} "
                                f"({SECRETS_EXAMPLE.name})")
        elif "emptyDir" not in vol:
            problems.append(f"{where}: {setting} {path} is not on a Secret")
    for k in env:
        if k in ("PIPEMESH_AUTH_SECRET", "PIPEMESH_ADMIN_TOKEN", "PIPEMESH_ETCD_PASSWORD"):
            problems.append(f"{where}: secret {k} given as a value; use a file")
    # Every container: resources, non-root, pinned image.
    pods = [(d["kind"], d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in ctx.rendered() if d["kind"] in ("DaemonSet", "StatefulSet", "Deployment")]
    for kind, name, ps in pods:
        psc = ps.get("securityContext", {})
        for ct in ps.get("initContainers", []) + ps["containers"]:
            w = f"{kind} {name} container {ct['name']}"
            r = ct.get("resources", {})
            if not r.get("requests") or "memory" not in r.get("limits", {}):
                problems.append(f"{w}: want resource requests and a memory limit")
            sc = ct.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                problems.append(f"{w}: not runAsNonRoot")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{w}: allowPrivilegeEscalation is not false")
            tag = ct["image"].rsplit(":", 1)
            if len(tag) < 2 or tag[1] == "latest" or "/" in tag[1]:
                problems.append(f"{w}: image {ct['image']} is not pinned")
    # Selectors: PDB and Service pick the DaemonSet's pods; etcd's StatefulSet and Service agree.
    for pdb in ctx.find("PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        if not any(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                       for k, v in sel.items())
                   for d in ctx.rendered() if d["kind"] in ("DaemonSet", "StatefulSet")):
            problems.append(f"PodDisruptionBudget {pdb['metadata']['name']} selects no pods")
    if not any(p["metadata"]["name"] and all(pod_labels.get(k) == v for k, v in
               p["spec"]["selector"]["matchLabels"].items()) for p in ctx.find("PodDisruptionBudget")):
        problems.append(f"{where}: no PodDisruptionBudget covers it")
    for svc in ctx.find("Service"):
        sel = svc["spec"].get("selector", {})
        targets = [d for d in ctx.rendered() if d["kind"] in ("DaemonSet", "StatefulSet") and
                   all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if not targets:
            problems.append(f"Service {svc['metadata']['name']} selects no pods")
            continue
        names = {p.get("name") for d in targets for ct in d["spec"]["template"]["spec"]["containers"]
                 for p in ct.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                problems.append(f"Service {svc['metadata']['name']}: targetPort {p['targetPort']} "
                                "names no container port")
    sts = ctx.find("StatefulSet")
    for s in sts:
        hs = ctx.find("Service", s["spec"]["serviceName"])
        if not hs or hs[0]["spec"].get("clusterIP") != "None":
            problems.append(f"StatefulSet {s['metadata']['name']}: serviceName "
                            f"{s['spec']['serviceName']} is not a headless Service")
    etcd = [s for s in sts if s["metadata"]["name"] == "etcd"]
    if etcd:
        ns = etcd[0]["metadata"].get("namespace", "default")
        members = {f"http://etcd-{i}.{etcd[0]['spec']['serviceName']}.{ns}.svc:2379"
                   for i in range(etcd[0]["spec"]["replicas"])}
        if set(cfg["etcd_endpoints"]) != members:
            problems.append(f"{where}: etcd endpoints {cfg['etcd_endpoints']} are not the "
                            f"members {sorted(members)}")
        args_text = " ".join(etcd[0]["spec"]["template"]["spec"]["containers"][0].get("command", []))
        for i in range(etcd[0]["spec"]["replicas"]):
            if f"etcd-{i}=http://etcd-{i}.{etcd[0]['spec']['serviceName']}.{ns}.svc:2380" not in args_text:
                problems.append(f"StatefulSet etcd: --initial-cluster lacks member etcd-{i} in "
                                f"namespace {ns}")
    if problems:
        raise Failure(f"{len(problems)} problem(s) in the Kubernetes manifests", *problems)
    return (f"hostNetwork DaemonSet: ports {sig}/TCP {rtc}/UDP+TCP {pipe}/UDP {admin}/TCP match "
            f"the node's settings, probes /healthz /readyz, grace {grace}s > drain "
            f"{cfg['drain_deadline_secs']}s; secrets, selectors, etcd members agree")


@check("ports")
def check_ports(ctx: Context) -> str:
    """systemd and Kubernetes nodes use the same ports (the image EXPOSEs them, the guide's
    table lists them)."""
    sysd = effective_systemd(ctx)
    k8s = ctx.effective.get("k8s")
    keys = ("signaling_listen", "rtc_listen", "pipe_listen", "admin_listen")
    a = {k: port_of(sysd[k]) for k in keys}
    problems = []
    if k8s:
        b = {k: port_of(k8s[k]) for k in keys}
        if a != b:
            problems.append(f"systemd ports {a} differ from Kubernetes ports {b}")
    doc = OPS.read_text()
    rows = [ln for ln in doc.splitlines() if ln.startswith("|")]
    for k, p in a.items():
        if not any(re.search(rf"\b{p}\b", r) for r in rows):
            problems.append(f"{rel(OPS)}: no table row lists {k} port {p}")
    if problems:
        raise Failure("ports disagree", *problems)
    return "systemd, Kubernetes and the guide's ports table agree: " + ", ".join(
        f"{k.split('_')[0]} {p}" for k, p in a.items())


@check("docs")
def check_docs(ctx: Context) -> str:
    b = ctx.bin
    text = OPS.read_text()
    problems = []
    cmds = flags = 0
    headings = {re.sub(r"^#+\s*", "", ln).strip() for ln in text.splitlines() if ln.startswith("#")}
    for n, code, in_block in markdown_code(text):
        line = re.sub(r"^\$\s+", "", code.strip())
        words = line.split()
        if words and re.fullmatch(r"(?:[\w./-]*/)?pipemesh", words[0]):
            cmds += 1
            if len(words) > 1 and not words[1].startswith("-") and words[1] not in b.subcommands:
                problems.append(f"{rel(OPS)}:{n}: pipemesh has no subcommand {words[1]!r}")
        if not in_block and re.fullmatch(r"--[a-z][a-z0-9-]*(?:[ =].*)?", code.strip()):
            flags += 1
            if (err := b.check_flag(re.match(r"--[a-z0-9-]+", code.strip()).group(0), None)):
                problems.append(f"{rel(OPS)}:{n}: {err}")
        for m in re.finditer(r"(?<![\w/.-])((?:deploy|scripts)/[\w./-]*[\w/])", code):
            if not (ROOT / m.group(1)).exists():
                problems.append(f"{rel(OPS)}:{n}: {m.group(1)} does not exist")
    # Section references from the other deploy files ("OPERATIONS.md, "Kubernetes"").
    for path, t in text_files():
        for m in re.finditer(r'OPERATIONS\.md, "([^"]+)"', t):
            if m.group(1) not in headings:
                problems.append(f"{rel(path)}: refers to section \"{m.group(1)}\" that "
                                f"{OPS.name} does not have")
    if problems:
        raise Failure(f"{len(problems)} problem(s) in {rel(OPS)}", *problems)
    return (f"{cmds} pipemesh command lines use existing subcommands, {flags} inline flags "
            "exist, referenced paths and sections exist")


@check("shellcheck")
def check_shellcheck(ctx: Context) -> str:
    exe = shutil.which("shellcheck")
    if not exe:
        raise Failure("shellcheck is not installed")
    targets = [(ROOT / "scripts" / "validate-deploy", None), (NODE_INIT, None)]
    # The compose one-shot service's inline script.
    doc = load_yaml_all(COMPOSE)[0]
    for name, s in doc["services"].items():
        ep = s.get("entrypoint")
        if isinstance(ep, list) and ep and ep[0].endswith("sh"):
            script = ctx.tmp / f"compose-{name}.sh"
            body = "\n".join(map(str, s.get("command", [])))
            script.write_text("#!/bin/sh\n" + body.replace("$$", "$"))
            targets.append((script, f"{rel(COMPOSE)} service {name}"))
    problems = []
    for path, label in targets:
        proc = run([exe, "--format=gcc", path], timeout=60)
        if proc.returncode != 0:
            problems += [ln.replace(str(path), label or rel(path)) for ln in
                         (proc.stdout + proc.stderr).strip().splitlines()]
    if problems:
        raise Failure("shellcheck found problems", *problems)
    return "clean: " + ", ".join(label or rel(p) for p, label in targets)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, type=Path, help="the pipemesh binary to check against")
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--only", action="append", help="run only these checks (repeatable)")
    opts = ap.parse_args()
    names = [n for n, _ in CHECKS]
    for o in opts.only or []:
        if o not in names:
            ap.error(f"no check {o!r} (checks: {', '.join(names)})")
    failed = passed = 0
    width = max(map(len, names))
    with tempfile.TemporaryDirectory(prefix="validate-deploy-") as tmp:
        tmp = Path(tmp)
        try:
            binary = Binary(opts.bin.resolve(), tmp)
        except (Failure, OSError, IndexError) as e:
            print(f"FAIL  {'binary':<{width}}  cannot read {opts.bin} --help: {e}")
            return 1
        ctx = Context(binary, tmp, opts.kubectl)
        for name, fn in CHECKS:
            if opts.only and name not in opts.only:
                continue
            try:
                detail = fn(ctx)
                print(f"PASS  {name:<{width}}  {detail}")
                passed += 1
            except Failure as e:
                lines = [str(a) for a in e.args] or ["failed"]
                print(f"FAIL  {name:<{width}}  {lines[0]}")
                for ln in lines[1:]:
                    print(f"      {'':<{width}}    {ln}")
                failed += 1
            except Exception:  # a bug in a check, or a file shaped unlike anything expected
                print(f"FAIL  {name:<{width}}  the check crashed:")
                for ln in traceback.format_exc().strip().splitlines():
                    print(f"      {'':<{width}}    {ln}")
                failed += 1
            sys.stdout.flush()
    total = passed + failed
    if failed:
        print(f"deploy files: {failed} of {total} checks failed")
        return 1
    print(f"deploy files: all {total} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
