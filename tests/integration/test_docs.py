"""The configuration reference is generated from the option tables: it must be current."""
import subprocess

from harness import binary, repo_root


def test_configuration_md_matches_the_option_tables(need_binary):
    generated = subprocess.run([str(binary()), "config-docs"], capture_output=True, check=True,
                               timeout=30).stdout.decode()
    on_disk = (repo_root() / "docs" / "configuration.md").read_text()
    assert on_disk == generated, (
        "docs/configuration.md is stale: regenerate it with "
        "`damselfly config-docs > docs/configuration.md`")
