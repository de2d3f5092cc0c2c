"""Named local stacks: each profile has its own ports and data folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VAR_ROOT = REPO_ROOT / "var"

# Loopback-only development credentials; production DSNs come from settings.
POSTGRES_USER = "polygraph"
POSTGRES_PASSWORD = "polygraph"
POSTGRES_DATABASE = "polygraph"


@dataclass(frozen=True)
class Profile:
    """Where one local stack listens and keeps its data."""

    name: str
    postgres_port: int
    redis_port: int
    bolt_port: int
    var_dir: Path

    def postgres_dsn(self, database: str = POSTGRES_DATABASE) -> str:
        return (
            f"postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}"
            f"@127.0.0.1:{self.postgres_port}/{database}"
        )

    @property
    def bolt_uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    def redis_url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"


# Below Linux's ephemeral range (32768-60999): a port in it can be held as the local end
# of some client connection at the moment a server starts, and the start then fails.
PROFILES: dict[str, Profile] = {
    "dev": Profile("dev", 25432, 25479, 25687, VAR_ROOT / "dev"),
    "test": Profile("test", 25433, 25480, 25688, VAR_ROOT / "test"),
    # `polygraph bench` only: its own ports and data, so benchmarks never touch dev or test.
    "bench": Profile("bench", 25434, 25481, 25689, VAR_ROOT / "bench"),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown profile {name!r}; choose one of: {known}") from None
