kumo.on('smtp_server_mail_from', function(sender)
  kumo.disconnect(451, 'no thank you', 'FollowWith421')
  -- this line is not reached
  -- The service responds to the peer with '451 no thank you\r\n421 HOSTNAME disconnecting due to previous error'
  -- and then drops the connection
end)
