// offload's web view: reload the front page while it is visible, and ask
// before a form changes anything. Nothing else runs here.
"use strict";
(function () {
  var every = Number(document.body.dataset.refresh || 0);
  if (every > 0) {
    setInterval(function () {
      if (document.visibilityState === "visible") {
        location.reload();
      }
    }, every * 1000);
  }
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.dataset.confirm)) {
        e.preventDefault();
      }
    });
  });
})();
