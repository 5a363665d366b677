"""A SIGHUP reload resolves every secret reference of the new config before accepting it: one
that cannot be resolved refuses the reload (old config kept, ``reload_failed`` naming the
reference, never a value), so a bad edit is caught now and not at the next restart."""

from __future__ import annotations

import trio

from .harness import audit_records, daemon_yaml, running_daemon, start_ox

NEW_RULE = "  - {name: extra-limit, kind: max_open_orders, max: 500}\n"


async def test_reload_with_an_unset_env_secret_is_refused_and_old_config_kept(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            text = daemon_yaml(tmp_path, ox.venue_yaml())
            async with running_daemon(tmp_path, text, ox.env()) as d:
                rules_before = [r.name for r in d.engine.rules]
                edited = daemon_yaml(tmp_path, ox.venue_yaml(), rules_yaml=
                                     "  - {name: max-open, kind: max_open_orders, max: 100000}\n" + NEW_RULE)
                edited = edited.replace("{env: RL_OX_SECRET}", "{env: RL_OX_SECRET_ROTATED}")
                (tmp_path / "killswitch.yaml").write_text(edited)
                assert not await d.reload()
                assert any("RL_OX_SECRET_ROTATED" in e for e in d.reload_errors), d.reload_errors
                await trio.sleep(0)
                assert [r.name for r in d.engine.rules] == rules_before
                assert d.config.venues[0].api_secret.name == "RL_OX_SECRET"
                recs = await audit_records(d)
                failed = [r for r in recs if r["event"] == "reload_failed"]
                assert failed and "RL_OX_SECRET_ROTATED" in str(failed[-1]["errors"])
                assert not any(r["event"] == "reload_ok" for r in recs)
                blob = str(d.reload_errors) + str(failed)
                assert ox.secret not in blob and ox.key not in blob

                # Fixed in the file: the next reload is accepted.
                (tmp_path / "killswitch.yaml").write_text(edited.replace("RL_OX_SECRET_ROTATED", "RL_OX_SECRET"))
                assert await d.reload()
                assert not d.reload_errors
            nursery.cancel_scope.cancel()


async def test_reload_with_a_group_readable_secret_file_is_refused(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, ox.venue_yaml()), ox.env()) as d:
                secret = tmp_path / "ox.secret"
                secret.write_text(ox.secret + "\n")
                secret.chmod(0o640)
                edited = daemon_yaml(tmp_path, ox.venue_yaml()).replace("{env: RL_OX_SECRET}", f"{{file: {secret}}}")
                (tmp_path / "killswitch.yaml").write_text(edited)
                assert not await d.reload()
                assert any(str(secret) in e and "chmod 600" in e for e in d.reload_errors), d.reload_errors
                assert ox.secret not in str(d.reload_errors)
            nursery.cancel_scope.cancel()
