// medgate review page: verdict shortcuts, image controls, and the JSON POST of the verdicts.
(function () {
  "use strict";
  var form = document.getElementById("review-form");
  var images = document.querySelectorAll("img.overlay");
  function applyView() {
    var zoom = document.getElementById("zoom").value / 100;
    var b = document.getElementById("brightness").value / 100;
    var c = document.getElementById("contrast").value / 100;
    images.forEach(function (img) {
      img.style.transform = "scale(" + zoom + ")";
      img.style.filter = "brightness(" + b + ") contrast(" + c + ")";
    });
  }
  ["zoom", "brightness", "contrast"].forEach(function (id) {
    var el = document.getElementById(id);
    if (el) { el.addEventListener("input", applyView); }
  });
  var reset = document.getElementById("reset-view");
  if (reset) {
    reset.addEventListener("click", function () {
      document.getElementById("zoom").value = 100;
      document.getElementById("brightness").value = 100;
      document.getElementById("contrast").value = 100;
      applyView();
    });
  }
  if (!form) { return; }
  var cards = Array.prototype.slice.call(form.querySelectorAll("fieldset.finding"));
  var current = 0;
  function focusCard(i) {
    if (!cards.length) { return; }
    current = (i + cards.length) % cards.length;
    cards.forEach(function (c, n) { c.classList.toggle("active", n === current); });
    cards[current].focus();
  }
  function choose(value) {
    var card = cards[current];
    if (!card) { return; }
    var input = card.querySelector("input[type=radio][value=" + value + "]");
    if (input) { input.checked = true; }
    if (value === "modified") { card.querySelector("input[type=number]").focus(); }
    else if (current < cards.length - 1) { focusCard(current + 1); }
  }
  cards.forEach(function (card, n) { card.addEventListener("focusin", function () { current = n; cards.forEach(function (c, m) { c.classList.toggle("active", m === n); }); }); });
  document.addEventListener("keydown", function (e) {
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName) && e.target.type !== "radio";
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); return; }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) { return; }
    var key = e.key.toLowerCase();
    if (key === "j") { focusCard(current + 1); }
    else if (key === "k") { focusCard(current - 1); }
    else if (key === "c") { choose("confirmed"); }
    else if (key === "r") { choose("rejected"); }
    else if (key === "m") { choose("modified"); }
    else { return; }
    e.preventDefault();
  });
  function show(kind, text) {
    var box = document.getElementById("message");
    box.className = "banner " + kind;
    box.textContent = text;
    window.scrollTo(0, 0);
  }
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var verdicts = [];
    cards.forEach(function (card) {
      var label = card.getAttribute("data-finding");
      var picked = card.querySelector("input[type=radio]:checked");
      if (!picked) { return; }
      var raw = card.querySelector("input[type=number]").value;
      var item = { finding: label, verdict: picked.value, comment: card.querySelector("input.comment").value };
      if (raw !== "") { item.value = parseFloat(raw); }
      verdicts.push(item);
    });
    var amend = document.getElementById("amend");
    var body = {
      reviewer: { name: document.getElementById("reviewer_name").value, id: document.getElementById("reviewer_id").value },
      verdicts: verdicts,
      report_text: document.getElementById("report_text").value,
      amend: amend ? amend.checked : false
    };
    var button = document.getElementById("submit");
    button.disabled = true;
    fetch("/api/v1/studies/" + form.getAttribute("data-study") + "/review", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (data) { return { ok: response.ok, data: data }; });
    }).then(function (answer) {
      button.disabled = false;
      if (answer.ok) {
        show("ok", form.getAttribute("data-sent"));
        document.body.setAttribute("data-review-sent", answer.data.review.sr_sop_instance_uid);
      } else {
        var detail = answer.data.detail;
        show("error", typeof detail === "string" ? detail : JSON.stringify(detail));
      }
    }).catch(function (err) { button.disabled = false; show("error", String(err)); });
  });
  focusCard(0);
})();
