"""Several worker processes on one port (SO_REUSEPORT), health probed once, restarts."""

from __future__ import annotations

import os
import signal
import time

from conftest import DOMESTIC_MX, OVERSEAS, OVERSEAS_MX, Listener, free_port, health_zone, wait_for, workers_of


def test_two_workers_answer_on_one_port_and_restart(smartdns):
    server = smartdns(copy_example=True, args=("--workers", "2"))
    workers = workers_of(server)
    assert len(workers) == 2
    for tcp in (False, True):
        for _ in range(20):  # the kernel spreads queries over both sockets
            assert server.query("mx.example.com", "A", tcp=tcp).answer
    os.kill(workers[0], signal.SIGKILL)
    server.wait_for_log(r"worker \d exited with -9: starting it again")
    wait_for(lambda: len(workers_of(server)) == 2 and workers[0] not in workers_of(server), 10)
    time.sleep(1)
    for _ in range(20):
        assert server.query("mx.example.com", "A").answer


def test_health_is_probed_once_per_target_and_reaches_every_worker(smartdns, geo_mmdb):
    port = free_port(DOMESTIC_MX, OVERSEAS_MX)
    domestic, overseas = Listener(DOMESTIC_MX, port), Listener(OVERSEAS_MX, port)
    health = {"interval": 1, "timeout": 0.5, "rise": 2, "fall": 2}
    try:
        server = smartdns(zones={"example.com": health_zone(port)}, config={"geodb": [str(geo_mmdb)], "health": health},
                          args=("--workers", "2"))
        time.sleep(3.5)
        # one probe a second per target, whatever the number of workers (2 here): 3 to 5, not 8
        assert 3 <= overseas.accepted <= 5, overseas.accepted
        overseas.close()
        server.wait_for_log(rf"health: SMTP {OVERSEAS_MX}:{port} is DOWN")
        # every worker must have heard: 20 queries spread over both sockets all fail over
        time.sleep(0.2)
        answers = {server.query("mx.example.com", "A", source=OVERSEAS).answer[0][0].address for _ in range(20)}
        assert answers == {DOMESTIC_MX}
    finally:
        domestic.close()
        overseas.close()


def test_broken_edit_keeps_health_checking_the_last_good_zone(smartdns, geo_mmdb):
    port = free_port(DOMESTIC_MX, OVERSEAS_MX)
    domestic = Listener(DOMESTIC_MX, port)  # the overseas site is down: nothing listens there
    health = {"interval": 0.5, "timeout": 0.3, "rise": 1, "fall": 1}
    try:
        server = smartdns(zones={"example.com": health_zone(port)}, config={"geodb": [str(geo_mmdb)], "health": health},
                          args=("--workers", "2"))
        server.wait_for_log(rf"health: SMTP {OVERSEAS_MX}:{port} is DOWN")
        wait_for(lambda: server.query("mx.example.com", "A", source=OVERSEAS).answer[0][0].address == DOMESTIC_MX, 5)
        server.write_zone("example.com", health_zone(port).replace("ttl: 5", "ttl: five"))  # a broken edit
        server.wait_for_log(r"zone error: .*ttl must be an integer")
        time.sleep(2)  # every process has reloaded; the supervisor must still know the overseas site is down
        answers = {server.query("mx.example.com", "A", source=OVERSEAS).answer[0][0].address for _ in range(20)}
        assert answers == {DOMESTIC_MX}
    finally:
        domestic.close()
