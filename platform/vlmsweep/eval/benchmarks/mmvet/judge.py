"""MM-Vet's grader, mm-vet_evaluator.py, as an OpenAI-compatible judge.

Its few-shot prompt (below, verbatim, so grades are comparable), then one table row
"question | ground truth | prediction | "; the judge's reply up to the first space must be a
number in [0, 1]. An unusable reply is asked again with "Predict the correctness of the answer
(digit): " appended, the temperature rising by 0.5 from the second retry on; after 5 unusable
replies the grade is 0.0. MM-Vet's published numbers use gpt-4-0613 as the judge: another
judge gives numbers that are not comparable with them.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

GRADING_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""
RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "

class Judge(Protocol):
    def grade(self, question: str, answer: str, prediction: str) -> float: ...  # 0..1


def grading_request(question: str, answer: str, prediction: str) -> str:
    truth = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return GRADING_PROMPT + "\n" + " | ".join([question, truth, prediction, ""])


def parse_grade(reply: str) -> float | None:
    try:
        grade = float(reply.split(" ")[0].strip())
    except ValueError:
        return None
    return grade if 0.0 <= grade <= 1.0 else None


@dataclass
class OpenAIJudge:
    """Grades through an OpenAI-compatible chat-completions endpoint, with urllib.
    base_url as the OpenAI clients take it ("https://api.openai.com/v1"); a URL without
    the /v1 gets it. The key is read from api_key_env when set (local servers need none)."""
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    http_retries: int = 3     # rate limits and server errors, then give up loudly
    backoff: float = 30.0     # the MM-Vet evaluator sleeps 30 s on a rate limit
    last_reply: str = ""      # the grader's "content", kept for its grade file

    def grade(self, question: str, answer: str, prediction: str) -> float:
        request = grading_request(question, answer, prediction)
        # (prompt, temperature) per try: MM-Vet's first ask, then its 4 counted re-asks
        tries = [(request, 0.0)] + [(request + RETRY_SUFFIX, 0.5 * k) for k in range(4)]
        for content, temperature in tries:
            self.last_reply = self._chat(content, temperature)
            grade = parse_grade(self.last_reply)
            if grade is not None:
                return grade
        return 0.0

    def _url(self) -> str:
        url = self.base_url.rstrip("/")
        return (url if url.endswith("/v1") else url + "/v1") + "/chat/completions"

    def _chat(self, content: str, temperature: float) -> str:
        body = json.dumps({"model": self.model, "max_tokens": 3, "temperature": temperature,
                           "messages": [{"role": "user", "content": content}]}).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        req = urllib.request.Request(self._url(), data=body, headers=headers, method="POST")
        for attempt in range(self.http_retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.load(resp)["choices"][0]["message"].get("content") or ""
            except urllib.error.HTTPError as err:
                problem = f"HTTP {err.code} {err.reason}"
                if err.code != 429 and err.code < 500:  # a bad request won't get better
                    break
            except urllib.error.URLError as err:
                problem = f"unreachable: {err.reason}"
            if attempt < self.http_retries:
                time.sleep(self.backoff)
        raise RuntimeError(f"MM-Vet judge {self._url()}: {problem}")
