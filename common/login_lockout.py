"""Login lockout that a stranger cannot turn into a denial of service (django-axes).

Two limits, counted over the cool-off period (GPUCONFIG_LOGIN_COOLOFF_MINUTES):

* one username from one address: GPUCONFIG_LOGIN_FAILURE_LIMIT wrong passwords lock that
  pair (someone guessing one account);
* one address over all usernames: GPUCONFIG_LOGIN_ADDRESS_FAILURE_LIMIT wrong passwords lock
  the address (someone spraying a password over many accounts).

axes compares every lockout parameter with one limit (AXES_FAILURE_LIMIT); this handler
gives the address its own, higher one by counting its failures in units of the pair's limit.
Failures during a lock are not recorded (AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT off),
so a lock ends one cool-off after it began, however often the attacker keeps trying.
"""

from __future__ import annotations

from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_lockout_parameters
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest


class AddressThrottlingAxesHandler(AxesDatabaseHandler):  # type: ignore[misc]
    """axes' database handler, with a limit per lockout parameter combination."""

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        parameters = get_lockout_parameters(request, credentials)
        attempts = self.get_user_attempts(request, credentials)
        pair_limit: int = settings.AXES_FAILURE_LIMIT
        worst = 0
        for parameter, queryset in zip(parameters, attempts, strict=True):
            failures = queryset.aggregate(total=Sum("failures_since_start"))["total"] or 0
            # In units of the pair's limit: reaching its own limit reaches axes' one.
            own_limit = _limit_for(parameter, pair_limit)
            worst = max(worst, failures * pair_limit // own_limit)
        return worst

    def reset_user_attempts(
        self, request: HttpRequest, credentials: dict[str, Any] | None = None
    ) -> int:
        """A successful login forgives that username's failures from that address only.

        axes would also clear the address's count over all usernames: anyone with one valid
        account could then log in between rounds and spray other accounts forever.
        """
        count, _ = AccessAttempt.objects.filter(
            username=get_client_username(request, credentials),
            ip_address=request.axes_ip_address,  # type: ignore[attr-defined]
        ).delete()
        return int(count)


def _limit_for(parameter: str | list[str], pair_limit: int) -> int:
    if parameter in ("ip_address", ["ip_address"]):
        return int(settings.GPUCONFIG_LOGIN_ADDRESS_FAILURE_LIMIT)
    return pair_limit
