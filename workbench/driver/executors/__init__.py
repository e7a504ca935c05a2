"""The executors, one per file, registered by name in :mod:`workbench.driver.spec`.

=========================  =======================================  ==========================
name                       load                                     module
=========================  =======================================  ==========================
``constant-arrival-rate``  open loop, fixed rate                    ``constant_arrival_rate``
``ramping-arrival-rate``   open loop, piecewise-linear rate         ``ramping_arrival_rate``
``constant-vus``           closed loop, fixed steps per iteration   ``constant_vus``
``scripted``               closed loop, Python per iteration        ``scripted``
``agent-fleet``            open loop per agent, certctl's agent     ``agent_fleet``
=========================  =======================================  ==========================

They share one lifecycle (``base.Executor``); the two open-loop executors share their
timer-paced arrivals (``arrival_rate``). Each owns its facts about a spec (its fields and their
``validate``, open or closed loop, run time, rates, clients, capacity unit, its scenario
parameters), so nothing outside this package and the registry in :mod:`workbench.driver.spec`
branches on an executor's name. Importing this package registers all five.
"""

from workbench.driver.executors.agent_fleet import AgentFleet
from workbench.driver.executors.base import Executor, local_share
from workbench.driver.executors.constant_arrival_rate import ConstantArrivalRate
from workbench.driver.executors.constant_vus import ConstantVUs
from workbench.driver.executors.ramping_arrival_rate import RampingArrivalRate
from workbench.driver.executors.scripted import Scripted

__all__ = ["AgentFleet", "ConstantArrivalRate", "ConstantVUs", "Executor", "RampingArrivalRate",
           "Scripted", "local_share"]
