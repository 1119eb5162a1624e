// Readable errors for htmx requests. The views answer their own errors (validation, 409,
// 503, 500) with a fragment marked X-GpuConfig-Fragment: that is swapped in like any answer,
// although htmx swaps no error status by default. Any other failure (a proxy's 502, Django's
// CSRF page, a lost connection) becomes one sentence in #page-alert instead of a blank area.
(function () {
  "use strict";

  function show(text, source) {
    var box = document.getElementById("page-alert");
    if (!box) return;
    var p = document.createElement("p");
    p.className = "notice error";
    p.setAttribute("role", "alert");
    p.textContent = text + " ";
    var dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "link";
    dismiss.setAttribute("data-dismiss", "");
    dismiss.textContent = "Dismiss";
    p.appendChild(dismiss);
    box.replaceChildren(p);
    box.dataset.source = source || "";
  }

  function describe(status) {
    if (status === 403) {
      return "The server refused this request (403). Your session may have expired: reload the page and log in again.";
    }
    if (status === 413) return "The request was too large for the server (413).";
    return "The server answered with an error (" + status + "). Reload the page to see the current state, then try again.";
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    // A session that ended is redirected to the login page, which the browser follows
    // silently: do not paste a login form into a part of the page.
    if (xhr.responseURL && xhr.responseURL.indexOf("/accounts/login/") !== -1) {
      event.detail.shouldSwap = false;
      event.detail.isError = true; // keeps the message: see htmx:afterRequest below
      show("Your session has ended: reload the page and log in again.", event.detail.elt && event.detail.elt.id);
      return;
    }
    if (xhr.status < 400) return;
    if (xhr.getResponseHeader("X-GpuConfig-Fragment")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
      return;
    }
    event.detail.shouldSwap = false;
    show(describe(xhr.status), event.detail.elt && event.detail.elt.id);
  });

  // Polls marked data-poll-visible-only skip their turn while the tab is hidden. (Not an
  // hx-trigger filter: htmx evaluates those as code, which the Content-Security-Policy forbids.)
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (document.hidden && elt && elt.hasAttribute("data-poll-visible-only")) event.preventDefault();
  });

  var pressed = ""; // id of the form button pressed last (see htmx:afterSettle below)

  // Apply asks first (the question is the button's data-confirm). The form posts on submit,
  // so the pressed button is the submit event's submitter, not htmx's element.
  document.addEventListener("htmx:confirm", function (event) {
    var trigger = event.detail.triggeringEvent;
    var button = trigger && trigger.submitter;
    if (!button || !button.dataset.confirm) return;
    event.preventDefault();
    if (window.confirm(button.dataset.confirm)) event.detail.issueRequest(true);
    else pressed = "";
  });

  // Only a button press is an action. htmx sends the form's last clicked or focused button
  // with every later request of that form (its lastButtonClicked), and posts to its
  // formaction, so without this a change made while focus was still on Apply would post to
  // the apply URL: a change re-validates only, at the form's own hx-post.
  document.addEventListener("htmx:configRequest", function (event) {
    var trigger = event.detail.triggeringEvent;
    var elt = event.detail.elt;
    if (elt && elt.id === "gpu-form" && (!trigger || trigger.type !== "submit")) {
      event.detail.parameters.delete("action");
      event.detail.path = elt.getAttribute("hx-post");
    }
  });

  // A button marked aria-disabled (Apply while a run is active) keeps its focus but does
  // nothing; the server would refuse the request anyway.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest('button[aria-disabled="true"]');
    if (button) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // The form is replaced after Preview, Save and Apply: put keyboard focus back on the button
  // that was pressed (htmx restores focus only when it is still on the old element, and the
  // Apply button is disabled while its request runs).
  document.addEventListener("submit", function (event) {
    pressed = (event.submitter && event.submitter.id) || "";
  }, true);
  document.addEventListener("htmx:afterSettle", function (event) {
    var config = event.detail.requestConfig;
    if (!pressed || !config || !config.elt || config.elt.tagName !== "FORM") return;
    var button = document.getElementById(pressed);
    var lost = !document.activeElement || document.activeElement === document.body;
    if (button && lost && !button.disabled) button.focus({ preventScroll: true });
    pressed = "";
  });

  document.addEventListener("htmx:sendError", function (event) {
    show("The server could not be reached. Check the connection; the page keeps trying where it refreshes by itself.",
      event.detail.elt && event.detail.elt.id);
  });

  document.addEventListener("htmx:timeout", function (event) {
    show("The server took too long to answer. Reload the page to see the current state.",
      event.detail.elt && event.detail.elt.id);
  });

  // A later success from the part of the page that failed clears its message.
  document.addEventListener("htmx:afterRequest", function (event) {
    var box = document.getElementById("page-alert");
    var elt = event.detail.elt;
    if (box && event.detail.successful && elt && elt.id && box.dataset.source === elt.id) {
      box.replaceChildren();
      box.dataset.source = "";
    }
  });

  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-dismiss]")) {
      var box = document.getElementById("page-alert");
      if (box) box.replaceChildren();
    }
  });
})();
