// The pages work without this script; with it, training jobs' progress updates in place,
// and a delete asks first.
"use strict";

function followJobs(table) {
  const rows = () => table.querySelectorAll("tr[data-live]");
  if (!rows().length) return;
  const timer = setInterval(async () => {
    let jobs;
    try {
      const answer = await fetch(table.dataset.jobs, { credentials: "same-origin" });
      if (!answer.ok) return;
      jobs = await answer.json();
    } catch (error) {
      return;
    }
    for (const job of jobs) {
      const row = table.querySelector(`tr[data-job="${job.id}"]`);
      if (!row) continue;
      row.querySelector("progress").value = job.progress;
      row.querySelector(".status").textContent = job.finished || !job.stage ? job.status : `${job.status} · ${job.stage}`;
      if (job.finished) row.removeAttribute("data-live");
    }
    if (!rows().length) {
      clearInterval(timer);
      location.reload(); // the new model version and its chart
    }
  }, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table[data-jobs]").forEach(followJobs);
  document.querySelectorAll("button.danger").forEach((button) => {
    button.addEventListener("click", (event) => {
      if (!confirm(button.textContent.trim() + "?")) event.preventDefault();
    });
  });
});
