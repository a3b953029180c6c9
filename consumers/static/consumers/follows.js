// The consumer page's follows: a follow of one of our producers has no bot address,
// so the bot's fields (host, port, secure, ws_token) show only while no producer is
// chosen: on saved rows, on rows added with "Add another", and when a row's
// producer changes. Without this script every field shows, and saving works alike.
(function () {
  "use strict";

  const PRODUCER = "select[name^='follows-'][name$='-producer']";
  const BOT_ROWS = [".form-row.field-host", ".form-row.field-ws_token"];

  function showFieldsOfItsKind(follow) {
    const producer = follow.querySelector(PRODUCER);
    if (!producer) return;
    const ofOurs = producer.value !== "";
    for (const selector of BOT_ROWS) {
      const row = follow.querySelector(selector);
      if (row) row.style.display = ofOurs ? "none" : "";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll(".inline-related").forEach(showFieldsOfItsKind);
  });
  document.addEventListener("change", (event) => {
    if (event.target.matches(PRODUCER)) {
      showFieldsOfItsKind(event.target.closest(".inline-related"));
    }
  });
  // Django's admin dispatches it on the new row.
  document.addEventListener("formset:added", (event) => {
    showFieldsOfItsKind(event.target);
  });
})();
