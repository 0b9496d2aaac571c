"""Templates, lazy groups, and master/slave groups."""

from __future__ import annotations

import pytest
import trio

from actionhub import (
    ActionHub,
    Behaviour,
    ConfigurationError,
    Job,
    SlaveTemplate,
    WorkerTemplate,
    WorkerTemplateRegistry,
)
from actionhub.testing import EscalationLog


async def _noop(job: Job) -> None:
    pass


def test_registry_register_template_has_delete() -> None:
    registry = WorkerTemplateRegistry()
    template = WorkerTemplate.build("resize", _noop, max_workers=4)
    registry.register(template)
    assert registry.has("resize")
    assert registry.template("resize") is template
    assert template.topic == "resize" and template.group == "resize"
    assert template.config.max_workers == 4
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register(template)
    assert registry.delete("resize") is template
    assert not registry.has("resize")
    with pytest.raises(KeyError, match="resize"):
        registry.template("resize")
    with pytest.raises(KeyError, match="resize"):
        registry.delete("resize")


def test_registry_decorator_and_validation() -> None:
    registry = WorkerTemplateRegistry()

    @registry.action(
        "thumbs", topic="images", group="g1", max_workers=2, slaves=[SlaveTemplate("audit", _noop)]
    )
    async def thumbs(job: Job) -> None:
        pass

    template = registry.template("thumbs")
    assert template.fn is thumbs
    assert (template.topic, template.group) == ("images", "g1")
    assert template.slave_name(template.slaves[0]) == "thumbs/slaves/audit"
    assert len(registry) == 1 and list(registry) == [template]
    with pytest.raises(ConfigurationError, match="unknown action option"):
        registry.action("bad", workers=3)(_noop)
    with pytest.raises(ConfigurationError, match="non-empty"):
        registry.action("")(_noop)
    with pytest.raises(ConfigurationError, match="same name"):
        registry.action("dup", slaves=[SlaveTemplate("a", _noop), SlaveTemplate("a", _noop)])(_noop)


async def test_template_groups_are_created_on_first_message(autojump_clock: trio.abc.Clock) -> None:
    registry = WorkerTemplateRegistry()
    seen: list[object] = []

    @registry.action("report", min_workers=2)
    async def report(job: Job) -> None:
        seen.append(job.payload)

    @registry.action("unused")
    async def unused(job: Job) -> None:
        pass

    hub = ActionHub(registry=registry)
    async with hub.running():
        await trio.sleep(1)
        assert hub.stats() == []  # subscribed, but no group yet
        await hub.publish("report", 1)
        await hub.publish("report", 2)
        await trio.sleep(1)
        assert [s.addr for s in hub.stats()] == ["report"]
        (stat,) = hub.stats()
        assert stat.total_message_received == 2 and stat.total_message_processed == 2
        assert stat.total_current_workers == 2  # min_workers apply once it exists
    assert seen == [1, 2]


async def test_registry_name_clash_with_hub_action() -> None:
    registry = WorkerTemplateRegistry()
    registry.action("a")(_noop)
    hub = ActionHub(registry=registry)
    with pytest.raises(ConfigurationError, match="already bound"):
        hub.bind("a", _noop)


def _recorder(log: list[str], label: str):  # type: ignore[no-untyped-def]
    async def action(job: Job) -> None:
        log.append(f"{label}:{job.payload}")

    return action


async def test_slaves_are_named_and_fed_by_their_topic(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    hub = ActionHub()
    hub.bind(
        "orders",
        _recorder(log, "master"),
        slaves=[
            SlaveTemplate("audit", _recorder(log, "audit")),
            SlaveTemplate("mail", _recorder(log, "mail")),
        ],
    )
    async with hub.running():
        assert [s.addr for s in hub.stats()] == ["orders", "orders/slaves/audit", "orders/slaves/mail"]
        assert [s.topic for s in hub.stats()][1] == "orders/slaves/audit"
        await hub.publish("orders", 1)
        await hub.publish("orders/slaves/audit", 2)
        await hub.publish("orders/slaves/mail", 3)
        await trio.sleep(1)
    assert sorted(log) == ["audit:2", "mail:3", "master:1"]


async def test_master_slave_start_and_stop_order(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    events: list[str] = []

    def lifecycle(label: str):  # type: ignore[no-untyped-def]
        async def action(job: Job) -> None:
            events.append(f"start {label}")
            try:
                await trio.sleep_forever()
            finally:  # cancelled once its group's shutdown_timeout has passed
                events.append(f"end {label} at {trio.current_time() - t0:.0f}")

        return action

    hub.bind(
        "master",
        lifecycle("master"),
        shutdown_timeout=10,
        slaves=[
            SlaveTemplate("s1", lifecycle("s1"), shutdown_timeout=10),
            SlaveTemplate("s2", lifecycle("s2"), shutdown_timeout=10),
        ],
    )
    t0 = trio.current_time()
    async with hub.running():
        await hub.publish("master", 1)
        await hub.publish("master/slaves/s1", 1)
        await hub.publish("master/slaves/s2", 1)
        await trio.sleep(1)
        started = list(hub.group("master").slaves)  # type: ignore[attr-defined]
        assert started == ["master/slaves/s1", "master/slaves/s2"]
    # slaves stop before their master, in reverse start order, each one after the other
    assert [e for e in events if e.startswith("end")] == ["end s2 at 11", "end s1 at 21", "end master at 31"]

    order: list[str] = []
    hub2 = ActionHub()
    hub2.bind("m", _noop, slaves=[SlaveTemplate("a", _noop), SlaveTemplate("b", _noop)])
    async with hub2.running():
        master = hub2.group("m")
        slaves = list(master.slaves.values())  # type: ignore[attr-defined]
        for group in [master, *slaves]:
            original = group.stop

            async def traced(group=group, original=original) -> None:  # type: ignore[no-untyped-def]
                order.append(group.name)
                await original()

            group.stop = traced  # type: ignore[method-assign]
        master_finished_before_slaves: list[bool] = []

        async def watch() -> None:
            await master.finished.wait()
            master_finished_before_slaves.append(not all(s.finished.is_set() for s in slaves))

        hub2._nursery.start_soon(watch)  # type: ignore[union-attr]
    assert order[0] == "m" and order[1:] == ["m/slaves/b", "m/slaves/a"]
    assert master_finished_before_slaves == [False]


async def test_slave_escalation_respawns_it_counted_against_master(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)

    async def fragile(job: Job) -> None:
        raise RuntimeError("slave down")

    hub.bind(
        "master",
        _noop,
        max_restarts=2,
        restart_window=3600,
        on_max_restarts="remove",
        slaves=[SlaveTemplate("s", fragile, behaviour=Behaviour.STOP_ALL_AND_ESCALATE, max_attempts=1)],
    )
    async with hub.running():
        first_slave = hub.group("master/slaves/s")
        await hub.publish("master/slaves/s", 1)
        await trio.sleep(1)
        second_slave = hub.group("master/slaves/s")
        assert second_slave is not first_slave  # respawned
        assert hub.group("master").stats().total_restarts == 1
        assert [s.addr for s in hub.stats()] == ["master", "master/slaves/s"]
        await hub.publish("master/slaves/s", 2)
        await trio.sleep(1)
        assert hub.group("master").stats().total_restarts == 2
        await hub.publish("master/slaves/s", 3)  # third slave escalation: over the master's limit
        await trio.sleep(1)
        assert hub.stats() == []  # master gone, and its slaves with it
        with pytest.raises(KeyError):
            hub.group("master/slaves/s")
        assert not hub.bus._groups  # type: ignore[attr-defined]  # every topic unsubscribed
    assert escalations.reasons() == ["panic", "panic", "panic", "max_restarts"]
    assert escalations[-1].group == "master"


async def test_master_escalation_takes_slaves_down(
    autojump_clock: trio.abc.Clock, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)

    async def crash(job: Job) -> None:
        raise RuntimeError("master down")

    hub.bind(
        "master",
        crash,
        behaviour=Behaviour.STOP_ALL_AND_ESCALATE,
        slaves=[SlaveTemplate("s", _noop)],
    )
    hub.bind("bystander", _noop)
    async with hub.running():
        await hub.publish("master", 1)
        await trio.sleep(1)
        assert [s.addr for s in hub.stats()] == ["bystander"]
        assert set(hub.bus._groups) == {"bystander"}  # type: ignore[attr-defined]
        await hub.publish("bystander", 1)
        await trio.sleep(1)
        assert hub.stats()[0].total_message_processed == 1
    assert [(e.group, e.reason) for e in escalations] == [("master", "panic")]
