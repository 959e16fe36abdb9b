// Follows a link marked data-follow as soon as the page loads (the link stays for anyone
// whose browser does not run scripts).
(function () {
  "use strict";
  var link = document.querySelector("a[data-follow]");
  if (link) window.location.assign(link.href);
})();
