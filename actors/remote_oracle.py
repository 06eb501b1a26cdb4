"""An oracle behind any OpenAI-compatible endpoint (`vllm serve`, a hosted large model), with the generators'
interface: `generate(requests) -> list[list[Completion]]`.

Concurrency is bounded; connection failures, timeouts, 429 and 5xx answers are retried with exponential backoff;
a 4xx answer is that request's error; an endpoint that cannot be reached or answers nonsense raises an error that
says so."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from codealign.records import Completion, GenerationRequest

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OracleUnavailable(ConnectionError):
    pass


class OracleBadResponse(ValueError):
    pass


@dataclass
class RemoteOracleConfig:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str = ""
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 0.5


class RemoteOracle:
    def __init__(self, cfg: RemoteOracleConfig, role: str = "oracle"):
        self.cfg = cfg
        self.role = role
        self.session = requests.Session()
        if cfg.api_key:
            self.session.headers["Authorization"] = f"Bearer {cfg.api_key}"
        self.policy_version = 0  # a remote model does not change under us

    def generate(self, reqs: list[GenerationRequest]) -> list[list[Completion]]:
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.max_concurrency)) as pool:
            return list(pool.map(self._one, reqs))

    def _one(self, req: GenerationRequest) -> list[Completion]:
        if not req.prompt or not req.prompt.strip():
            return [self._error(req, "empty prompt")]
        body = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": req.prompt}],
            "n": req.n,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_tokens": req.max_tokens,
            "logprobs": True,
        }
        if req.stop:
            body["stop"] = req.stop
        if req.seed is not None:
            body["seed"] = req.seed
        if req.json_schema is not None:  # OpenAI structured outputs; vLLM serve honours it too
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": req.json_schema}}
        if not req.chat:
            body.pop("messages")
            body["prompt"] = req.prompt
        url = self.cfg.base_url.rstrip("/") + ("/chat/completions" if req.chat else "/completions")
        payload = self._post(url, body)
        if isinstance(payload, str):  # the endpoint refused this request
            return [self._error(req, payload)]
        return self._parse(req, payload)

    def _post(self, url: str, body: dict) -> dict | str:
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.session.post(url, json=body, timeout=self.cfg.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                return f"HTTP {resp.status_code}: {_error_message(resp)}"
            try:
                return resp.json()
            except ValueError as exc:
                raise OracleBadResponse(f"{url} answered with something that is not JSON: {resp.text[:200]!r}") from exc
        raise OracleUnavailable(f"{url} unreachable after {self.cfg.max_retries + 1} attempts: {last}")

    def _parse(self, req: GenerationRequest, payload: dict) -> list[Completion]:
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices:
            raise OracleBadResponse(f"the endpoint's answer has no choices: {str(payload)[:200]}")
        out = []
        for choice in choices:
            if not isinstance(choice, dict):
                raise OracleBadResponse(f"a choice is not an object: {str(choice)[:200]}")
            if req.chat:
                text = (choice.get("message") or {}).get("content")
                logprobs = [float(t["logprob"]) for t in ((choice.get("logprobs") or {}).get("content") or [])]
            else:
                text = choice.get("text")
                logprobs = [float(x) for x in ((choice.get("logprobs") or {}).get("token_logprobs") or [])]
            if not isinstance(text, str):
                raise OracleBadResponse(f"a choice has no text: {str(choice)[:200]}")
            out.append(Completion(req.request_id, text, [], logprobs, choice.get("finish_reason") or "stop",
                                  self.policy_version, self.role))
        return out

    def _error(self, req: GenerationRequest, reason: str) -> Completion:
        return Completion(req.request_id, "", [], [], "error", self.policy_version, self.role, error=reason)


def _error_message(resp: requests.Response) -> str:
    try:
        data = resp.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        return str(err.get("message", err) if isinstance(err, dict) else err)[:300]
    except ValueError:
        return resp.text[:300]
