"""The shell commands of deploy/README.md, read as a shell reads them, so that the tests check
and run the guide's own commands rather than copies of them (tests/deploy/test_guide.py,
tests/e2e/test_job_submit.py).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from tests.deploy.manifests import AUTH_SECRET_KEY, REPO

GUIDE = REPO / "deploy" / "README.md"
_SUBSTITUTION = re.compile(r"^\$\((.*)\)$", re.DOTALL)


def shell_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", GUIDE.read_text(), re.DOTALL | re.MULTILINE)


def commands(block: str) -> list[list[str]]:
    """Each command of a block as its argv: continued lines joined, comments and a trailing
    `&` dropped, quotes removed (a `"$(...)"` stays one word, unexpanded)."""
    argvs = []
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv[-1:] == ["&"]:
            argv = argv[:-1]
        if argv:
            argvs.append(argv)
    return argvs


def substitution(word: str) -> str:
    """The command inside a word that is one `$(...)`; ValueError for any other word."""
    match = _SUBSTITUTION.match(word)
    if not match:
        raise ValueError(f"not a command substitution: {word!r}")
    return match.group(1)


@dataclass(frozen=True)
class TeamSubmit:
    """The guide's way to submit to a team's token-mode RayCluster: the Secret (section 2), then
    section 7's block."""

    create_secret: list[str]  # kubectl create secret generic NAME --from-literal=KEY=$(...)
    port_forward: list[str]  # kubectl port-forward svc/NAME-head-svc LOCAL:8265
    exports: dict[str, str]  # NAME -> value as written, before the shell expands it
    submit: list[str]  # ray job submit FLAGS -- python -m magpie_ray OVERRIDES

    @property
    def secret_name(self) -> str:
        return self.create_secret[4]

    def secret_literal(self) -> tuple[str, str]:
        """(key, value as written) of the Secret's one `--from-literal`."""
        (literal,) = [w for w in self.create_secret if w.startswith("--from-literal=")]
        key, _, value = literal.removeprefix("--from-literal=").partition("=")
        return key, value

    def token_command(self) -> str:
        """The shell command whose output the Secret stores as the token."""
        return substitution(self.secret_literal()[1])

    def submit_flags(self) -> list[str]:
        """The flags of `ray job submit`, before `--`."""
        return self.submit[3 : self.submit.index("--")]

    def entrypoint(self) -> str:
        return shlex.join(self.submit[self.submit.index("--") + 1 :])


def _one(argvs: list[list[str]], prefix: list[str], where: str) -> list[str]:
    found = [a for a in argvs if a[: len(prefix)] == prefix]
    assert len(found) == 1, f"expected one `{shlex.join(prefix)} ...` in {where}, found {found}"
    return found[0]


def team_submit() -> TeamSubmit:
    blocks = [commands(b) for b in shell_blocks()]
    secrets = [
        a
        for argvs in blocks
        for a in argvs
        if any(w.startswith(f"--from-literal={AUTH_SECRET_KEY}=") for w in a)
    ]
    create_secret = _one(secrets, ["kubectl", "create", "secret", "generic"], f"{GUIDE}")
    (argvs,) = [b for b in blocks if any(a[:3] == ["ray", "job", "submit"] for a in b)]
    where = f"{GUIDE}'s `ray job submit` block"
    return TeamSubmit(
        create_secret=create_secret,
        port_forward=_one(argvs, ["kubectl", "port-forward"], where),
        exports=dict(_export(a) for a in argvs if a[0] == "export"),
        submit=_one(argvs, ["ray", "job", "submit"], where),
    )


def _export(argv: list[str]) -> tuple[str, str]:
    name, _, value = argv[1].partition("=")
    return name, value


def exports_everywhere() -> list[tuple[str, str]]:
    """(name, value as written) of every `export` in the guide."""
    return [_export(a) for b in shell_blocks() for a in commands(b) if a[0] == "export"]
