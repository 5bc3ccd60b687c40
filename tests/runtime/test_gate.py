"""ModelGate: text sequences share the model, a media request has it alone."""

from __future__ import annotations

import asyncio

import pytest

from qms_runtime.gate import ModelGate

pytestmark = pytest.mark.runtime


def test_media_waits_for_text_and_holds_new_text_back() -> None:
    async def scenario() -> list[str]:
        gate = ModelGate()
        log: list[str] = []
        text_done = asyncio.Event()

        async def text(name: str, hold: asyncio.Event | None) -> None:
            async with gate.shared():
                log.append(f"{name} start")
                if hold is not None:
                    await hold.wait()
                log.append(f"{name} end")

        async def media() -> None:
            async with gate.exclusive():
                log.append("media start")
                assert gate.state == (0, True, 1)  # t2 waits its turn
                await asyncio.sleep(0.01)
                log.append("media end")

        first = asyncio.create_task(text("t1", text_done))
        await asyncio.sleep(0.01)
        m = asyncio.create_task(media())
        await asyncio.sleep(0.01)
        assert gate.state == (1, False, 1)  # media waits for the running text sequence
        second = asyncio.create_task(text("t2", None))
        await asyncio.sleep(0.01)
        assert log == ["t1 start"]  # t2 is held back behind the waiting media request
        text_done.set()
        await asyncio.gather(first, m, second)
        assert gate.state == (0, False, 0)
        return log

    assert asyncio.run(scenario()) == [
        "t1 start",
        "t1 end",
        "media start",
        "media end",
        "t2 start",
        "t2 end",
    ]


def test_a_cancelled_waiter_leaves_the_gate_usable() -> None:
    async def scenario() -> tuple[int, bool, int]:
        gate = ModelGate()
        hold = asyncio.Event()

        async def text() -> None:
            async with gate.shared():
                await hold.wait()

        async def media() -> None:
            async with gate.exclusive():
                pass

        running = asyncio.create_task(text())
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(media())
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        later = asyncio.create_task(text())  # not blocked by the cancelled media request
        await asyncio.sleep(0.01)
        hold.set()
        await asyncio.gather(running, later)
        return gate.state

    assert asyncio.run(scenario()) == (0, False, 0)


def test_a_stream_of_media_requests_does_not_starve_text() -> None:
    async def scenario() -> list[str]:
        gate = ModelGate()
        log: list[str] = []

        async def media(name: str) -> None:
            async with gate.exclusive():
                log.append(name)
                await asyncio.sleep(0.01)

        async def text() -> None:
            async with gate.shared():
                log.append("text")

        tasks = [asyncio.create_task(media("m1"))]
        await asyncio.sleep(0.001)
        tasks.append(asyncio.create_task(text()))  # arrives while m1 runs
        await asyncio.sleep(0.001)
        tasks += [asyncio.create_task(media(f"m{i}")) for i in (2, 3)]  # arrive after it
        await asyncio.gather(*tasks)
        return log

    assert asyncio.run(scenario()) == ["m1", "text", "m2", "m3"]
